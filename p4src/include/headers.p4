/* Header, metadata and constant definitions of the p4mtcp NIC (docs/ARCHITECTURE.md). */
#ifndef MTCP_NIC_HEADERS_P4
#define MTCP_NIC_HEADERS_P4

/* v1model port that carries P4Runtime packet-in/packet-out (BMv2 --cpu-port 255). */
#define CPU_PORT 9w255

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_ARP  = 0x0806;
const bit<8>  IP_PROTO_ICMP  = 1;
const bit<8>  IP_PROTO_TCP   = 6;
const bit<16> ARP_HTYPE_ETHERNET = 1;
const bit<16> ARP_OPER_REQUEST = 1;
const bit<16> ARP_OPER_REPLY   = 2;
const bit<8>  ICMP_ECHO_REPLY   = 0;   /* RFC 792 */
const bit<8>  ICMP_ECHO_REQUEST = 8;

/* Buckets of the redirection table; p4mtcp.hashing.RETA_SIZE is the same number. */
const bit<16> RETA_SIZE = 128;

/* Frames shorter than this carry Ethernet padding after the IPv4 datagram. */
const bit<32> ETH_MIN_FRAME = 60;

/* meta.port_role */
const bit<2> ROLE_UNKNOWN = 0;
const bit<2> ROLE_NETWORK = 1;
const bit<2> ROLE_CORE    = 2;

/* Index of NicIngress.drops. */
const bit<4> DROP_PARSER_ERROR  = 0;
const bit<4> DROP_BAD_IPV4_CSUM = 1;
const bit<4> DROP_BAD_TCP_CSUM  = 2;
const bit<4> DROP_BAD_LENGTH    = 3;
const bit<4> DROP_UNKNOWN_PORT  = 4;
const bit<4> DROP_NOT_LOCAL     = 5;
const bit<4> DROP_UNHANDLED     = 6;
const bit<4> DROP_NO_CORE       = 7;
const bit<4> DROP_NO_ROUTE      = 8;
const bit<4> DROP_IPV4_OPTIONS  = 9;
const bit<4> DROP_BAD_ICMP_CSUM = 10;

/* packet_in.reason */
const bit<8> PACKET_IN_ARP = 1;
const bit<8> PACKET_IN_NEIGHBOR_MISS = 2;
const bit<8> PACKET_IN_ICMP = 3;      /* ICMP to a local address other than an echo request */

error {
    IPv4BadVersion,
    TcpBadDataOffset
}

/* Controller headers are whole bytes (P4Runtime carries them as metadata fields). */
@controller_header("packet_in")
@id(1)
header packet_in_header_t {
    bit<9> ingress_port;
    bit<7> _pad;
    bit<8> reason;
}

@controller_header("packet_out")
@id(2)
header packet_out_header_t {
    bit<9> egress_port;
    bit<7> _pad;
}

header ethernet_t {
    bit<48> dst_addr;
    bit<48> src_addr;
    bit<16> ether_type;
}

/* ARP for Ethernet/IPv4 only (RFC 826 with hlen 6, plen 4). */
header arp_t {
    bit<16> htype;
    bit<16> ptype;
    bit<8>  hlen;
    bit<8>  plen;
    bit<16> oper;
    bit<48> sha;
    bit<32> spa;
    bit<48> tha;
    bit<32> tpa;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<3>  flags;
    bit<13> frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdr_checksum;
    bit<32> src_addr;
    bit<32> dst_addr;
}

/* The fixed 20 bytes; options stay in the payload so the checksum covers them. */
header tcp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<32> seq_no;
    bit<32> ack_no;
    bit<4>  data_offset;
    bit<4>  res;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgent_ptr;
}

/* RFC 792: the first 8 bytes of every ICMP message. `rest` is identifier and sequence number
 * of an echo, the next-hop MTU of a fragmentation-needed message (RFC 1191), ... */
header icmp_t {
    bit<8>  type;
    bit<8>  code;
    bit<16> checksum;
    bit<32> rest;
}

struct headers_t {
    packet_out_header_t packet_out;
    packet_in_header_t  packet_in;
    ethernet_t          ethernet;
    arp_t               arp;
    ipv4_t              ipv4;
    tcp_t               tcp;
    icmp_t              icmp;
}

struct metadata_t {
    bit<16> l4_len;        /* IPv4 total length minus the 20-byte header: the TCP length */
    bit<2>  port_role;
    bit<8>  core;
    bit<8>  rss_bucket;
    bit<32> next_hop;
}

#endif
