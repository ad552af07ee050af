/* Checksum offload. Verification only flags standard_metadata.checksum_error (v1model); ingress
 * drops flagged frames from network ports. Computation runs only for frames from core ports,
 * whose stack leaves both checksums zero. */
#ifndef MTCP_NIC_CHECKSUM_P4
#define MTCP_NIC_CHECKSUM_P4

control NicVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        /* RFC 791 3.1: the header checksum covers the header only. */
        verify_checksum(hdr.ipv4.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.total_len,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
        /* RFC 9293 3.1: pseudo-header (src, dst, zero, protocol, TCP length), header, options
         * and data; the options and data are the payload after the fixed header. */
        verify_checksum_with_payload(hdr.tcp.isValid(),
            { hdr.ipv4.src_addr, hdr.ipv4.dst_addr, 8w0, hdr.ipv4.protocol, meta.l4_len,
              hdr.tcp.src_port, hdr.tcp.dst_port, hdr.tcp.seq_no, hdr.tcp.ack_no,
              hdr.tcp.data_offset, hdr.tcp.res, hdr.tcp.flags, hdr.tcp.window,
              hdr.tcp.urgent_ptr },
            hdr.tcp.checksum, HashAlgorithm.csum16);
        /* RFC 792: the checksum covers the ICMP message, header and data. */
        verify_checksum_with_payload(hdr.icmp.isValid(),
            { hdr.icmp.type, hdr.icmp.code, hdr.icmp.rest },
            hdr.icmp.checksum, HashAlgorithm.csum16);
    }
}

control NicComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(hdr.ipv4.isValid() && meta.port_role == ROLE_CORE,
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.total_len,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.tcp.isValid() && meta.port_role == ROLE_CORE,
            { hdr.ipv4.src_addr, hdr.ipv4.dst_addr, 8w0, hdr.ipv4.protocol, meta.l4_len,
              hdr.tcp.src_port, hdr.tcp.dst_port, hdr.tcp.seq_no, hdr.tcp.ack_no,
              hdr.tcp.data_offset, hdr.tcp.res, hdr.tcp.flags, hdr.tcp.window,
              hdr.tcp.urgent_ptr },
            hdr.tcp.checksum, HashAlgorithm.csum16);
    }
}

#endif
