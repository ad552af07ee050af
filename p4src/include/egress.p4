/* Egress: per-port transmit counters. */
#ifndef MTCP_NIC_EGRESS_P4
#define MTCP_NIC_EGRESS_P4

control NicEgress(inout headers_t hdr,
                  inout metadata_t meta,
                  inout standard_metadata_t standard_metadata) {
    @id(3) counter(512, CounterType.packets_and_bytes) tx_port;

    apply {
        tx_port.count((bit<32>)standard_metadata.egress_port);
    }
}

#endif
