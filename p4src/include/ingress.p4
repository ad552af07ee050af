/* Ingress, in the order dataplane/pipeline.py mirrors it: a packet-out leaves as it is; every
 * other frame passes admission (parser errors, the port's role, the IPv4 header against the
 * frame), then is handled by where it came from: a network port (ARP, checksums, local address,
 * steering to a core, echo replies) or a core port (routing to the network). Every drop goes
 * through drop(reason), which counts it and ends ingress; every packet-in through to_cpu(reason). */
#ifndef MTCP_NIC_INGRESS_P4
#define MTCP_NIC_INGRESS_P4

control NicIngress(inout headers_t hdr,
                   inout metadata_t meta,
                   inout standard_metadata_t standard_metadata) {
    @id(1) counter(512, CounterType.packets_and_bytes) rx_port;
    @id(2) counter(16, CounterType.packets_and_bytes) drops;
    @id(4) counter(512, CounterType.packets_and_bytes) icmp_echo;   /* replies, by port */
    @id(1) direct_counter(CounterType.packets_and_bytes) flow_steer_hits;

    /* Counted under its reason (the index of `drops`); nothing after it runs. */
    @id(17) action drop(bit<4> reason) {
        drops.count((bit<32>)reason);
        mark_to_drop(standard_metadata);
        exit;
    }
    /* To the controller as a P4Runtime packet-in, saying where it came from and why. */
    @id(18) action to_cpu(bit<8> reason) {
        standard_metadata.egress_spec = CPU_PORT;
        hdr.packet_in.setValid();
        hdr.packet_in.ingress_port = standard_metadata.ingress_port;
        hdr.packet_in._pad = 0;
        hdr.packet_in.reason = reason;
    }

    /* RFC 792 "Echo or Echo Reply Message": the addresses reversed, type 0, back out of the
     * port it came in on. The checksum is updated for the one changed word (type/code 0x0800 ->
     * 0x0000) as RFC 1624 eqn. 3 says: HC' = ~(~HC + ~m + m'). Swapping the addresses leaves
     * the IPv4 header checksum as it is. */
    @id(19) action icmp_echo_reply() {
        bit<48> mac = hdr.ethernet.dst_addr;
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = mac;
        bit<32> addr = hdr.ipv4.dst_addr;
        hdr.ipv4.dst_addr = hdr.ipv4.src_addr;
        hdr.ipv4.src_addr = addr;
        hdr.icmp.type = ICMP_ECHO_REPLY;
        bit<32> sum = (bit<32>)(~hdr.icmp.checksum) + 32w0xF7FF;
        sum = (sum & 32w0xFFFF) + (sum >> 16);
        hdr.icmp.checksum = ~(sum[15:0]);
        standard_metadata.egress_spec = standard_metadata.ingress_port;
        icmp_echo.count((bit<32>)standard_metadata.ingress_port);
    }

    @id(1) action set_network_port() {
        meta.port_role = ROLE_NETWORK;
    }
    @id(2) action set_core_port(bit<8> core) {
        meta.port_role = ROLE_CORE;
        meta.core = core;
    }
    @id(3) action unknown_port() {
        drop(DROP_UNKNOWN_PORT);
    }
    /* RFC 826 "Packet Reception": swap the protocol addresses, answer with our hardware address,
     * send back out of the port the request came in on. */
    @id(4) action arp_reply(bit<48> mac) {
        bit<32> asker = hdr.arp.spa;
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = mac;
        hdr.arp.oper = ARP_OPER_REPLY;
        hdr.arp.tha = hdr.arp.sha;
        hdr.arp.sha = mac;
        hdr.arp.spa = hdr.arp.tpa;
        hdr.arp.tpa = asker;
        standard_metadata.egress_spec = standard_metadata.ingress_port;
    }
    @id(5) action arp_to_cpu() {
        to_cpu(PACKET_IN_ARP);
    }
    @id(6) action set_local() {
    }
    @id(7) action not_local() {
        drop(DROP_NOT_LOCAL);
    }
    @id(8) action steer_to_core(bit<9> port) {
        standard_metadata.egress_spec = port;
    }
    /* Symmetric RSS: the endpoints are ordered before hashing, so both directions of a flow
     * land in the same bucket (p4mtcp.hashing.rss_bucket computes the same). */
    @id(9) action use_rss() {
        bit<32> lo_ip = (hdr.ipv4.src_addr > hdr.ipv4.dst_addr) ? hdr.ipv4.dst_addr
                                                                 : hdr.ipv4.src_addr;
        bit<32> hi_ip = (hdr.ipv4.src_addr > hdr.ipv4.dst_addr) ? hdr.ipv4.src_addr
                                                                 : hdr.ipv4.dst_addr;
        bit<16> lo_port = (hdr.tcp.src_port > hdr.tcp.dst_port) ? hdr.tcp.dst_port
                                                                : hdr.tcp.src_port;
        bit<16> hi_port = (hdr.tcp.src_port > hdr.tcp.dst_port) ? hdr.tcp.src_port
                                                                : hdr.tcp.dst_port;
        hash(meta.rss_bucket, HashAlgorithm.crc32, 8w0, { lo_ip, hi_ip, lo_port, hi_port },
             RETA_SIZE);
    }
    @id(10) action no_core() {
        drop(DROP_NO_CORE);
    }
    /* next_hop 0 means on-link: the destination is its own next hop (one entry per subnet). */
    @id(11) action set_next_hop(bit<32> next_hop, bit<9> port) {
        meta.next_hop = (next_hop == 32w0) ? hdr.ipv4.dst_addr : next_hop;
        standard_metadata.egress_spec = port;
    }
    @id(12) action no_route() {
        drop(DROP_NO_ROUTE);
    }
    @id(13) action set_dst_mac(bit<48> mac) {
        hdr.ethernet.dst_addr = mac;
    }
    /* The agent resolves the next hop (ARP) and may send the frame again as a packet-out. */
    @id(14) action neighbor_miss() {
        to_cpu(PACKET_IN_NEIGHBOR_MISS);
    }
    @id(15) action set_src_mac(bit<48> mac) {
        hdr.ethernet.src_addr = mac;
    }
    @id(16) action nop() {
    }

    @id(1) table port_role {
        key = { standard_metadata.ingress_port: exact; }
        actions = { set_network_port; set_core_port; unknown_port; }
        default_action = unknown_port();
        size = 512;
    }

    @id(2) table arp_responder {
        key = { hdr.arp.tpa: exact; }
        actions = { arp_reply; arp_to_cpu; }
        default_action = arp_to_cpu();
        size = 64;
    }

    @id(3) table local_ipv4 {
        key = { hdr.ipv4.dst_addr: exact; }
        actions = { set_local; not_local; }
        default_action = not_local();
        size = 64;
    }

    @id(4) table flow_steer {
        key = {
            hdr.ipv4.src_addr: exact;
            hdr.ipv4.dst_addr: exact;
            hdr.tcp.src_port: exact;
            hdr.tcp.dst_port: exact;
        }
        actions = { steer_to_core; use_rss; }
        default_action = use_rss();
        counters = flow_steer_hits;
        size = 16384;
    }

    @id(5) table reta {
        key = { meta.rss_bucket: exact; }
        actions = { steer_to_core; no_core; }
        default_action = no_core();
        size = 128;
    }

    @id(6) table ipv4_lpm {
        key = { hdr.ipv4.dst_addr: lpm; }
        actions = { set_next_hop; no_route; }
        default_action = no_route();
        size = 1024;
    }

    @id(7) table neighbor {
        key = { meta.next_hop: exact; }
        actions = { set_dst_mac; neighbor_miss; }
        default_action = neighbor_miss();
        size = 1024;
    }

    @id(8) table port_mac {
        key = { standard_metadata.egress_spec: exact; }
        actions = { set_src_mac; nop; }
        default_action = nop();
        size = 512;
    }

    apply {
        rx_port.count((bit<32>)standard_metadata.ingress_port);
        if (hdr.packet_out.isValid()) {
            standard_metadata.egress_spec = hdr.packet_out.egress_port;
            hdr.packet_out.setInvalid();
            exit;
        }

        /* Admission (pipeline.py: ingress, _ipv4_admission). */
        if (standard_metadata.parser_error != error.NoError) {
            drop(DROP_PARSER_ERROR);
        }
        port_role.apply();
        if (hdr.ipv4.isValid()) {
            if (hdr.ipv4.ihl != 4w5) {
                drop(DROP_IPV4_OPTIONS);
            }
            /* RFC 791: total length counts header and data; only Ethernet padding of a
             * minimum-size frame may follow the datagram. */
            bit<32> ip_end = (bit<32>)hdr.ipv4.total_len + 32w14;
            if (hdr.ipv4.total_len < 16w20
                    || ip_end > standard_metadata.packet_length
                    || (ip_end < standard_metadata.packet_length
                        && standard_metadata.packet_length > ETH_MIN_FRAME)
                    || (hdr.tcp.isValid()
                        && (((bit<16>)hdr.tcp.data_offset) << 2) > meta.l4_len)) {
                drop(DROP_BAD_LENGTH);
            }
            if (hdr.ipv4.flags[0:0] == 1w1 || hdr.ipv4.frag_offset != 13w0) {
                drop(DROP_UNHANDLED);
            }
        }

        /* From a network port (pipeline.py: _from_network). */
        if (meta.port_role == ROLE_NETWORK) {
            if (hdr.arp.isValid()) {
                if (hdr.arp.htype != ARP_HTYPE_ETHERNET || hdr.arp.ptype != ETHERTYPE_IPV4
                        || hdr.arp.hlen != 8w6 || hdr.arp.plen != 8w4) {
                    drop(DROP_UNHANDLED);
                }
                if (hdr.arp.oper == ARP_OPER_REQUEST) {
                    arp_responder.apply();
                } else {
                    to_cpu(PACKET_IN_ARP);
                }
                exit;
            }
            if (!hdr.ipv4.isValid()) {
                drop(DROP_UNHANDLED);
            }
            if (standard_metadata.checksum_error == 1w1) {
                /* v1model has one error bit: the header sums to zero (valid) iff the TCP or
                 * ICMP checksum is the one that failed. */
                bit<16> ipv4_residue;
                hash(ipv4_residue, HashAlgorithm.csum16, 16w0,
                     { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.total_len,
                       hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.frag_offset,
                       hdr.ipv4.ttl, hdr.ipv4.protocol, hdr.ipv4.hdr_checksum,
                       hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
                     32w65536);
                if (ipv4_residue != 16w0) {
                    drop(DROP_BAD_IPV4_CSUM);
                }
                if (hdr.tcp.isValid()) {
                    drop(DROP_BAD_TCP_CSUM);
                }
                drop(DROP_BAD_ICMP_CSUM);
            }
            local_ipv4.apply();
            if (hdr.icmp.isValid()) {
                if (hdr.icmp.type == ICMP_ECHO_REQUEST && hdr.icmp.code == 8w0) {
                    icmp_echo_reply();
                } else {
                    to_cpu(PACKET_IN_ICMP);
                }
                exit;
            }
            if (!hdr.tcp.isValid()) {
                drop(DROP_UNHANDLED);
            }
            switch (flow_steer.apply().action_run) {
                use_rss: { reta.apply(); }
            }
            exit;
        }

        /* From a core port (pipeline.py: _from_core). */
        if (!hdr.ipv4.isValid()) {
            drop(DROP_UNHANDLED);
        }
        ipv4_lpm.apply();
        switch (neighbor.apply().action_run) {
            set_dst_mac: { port_mac.apply(); }
        }
    }
}

#endif
