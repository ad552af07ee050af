/* p4mtcp NIC: checksum offload, ARP responder and per-core TCP flow steering (v1model).
 * The names, keys and ids are the contract in docs/ARCHITECTURE.md; dataplane/pipeline.py
 * mirrors this program control by control. */
#include <core.p4>
#include <v1model.p4>

#include "include/headers.p4"
#include "include/parser.p4"
#include "include/checksum.p4"
#include "include/ingress.p4"
#include "include/egress.p4"

V1Switch(NicParser(),
         NicVerifyChecksum(),
         NicIngress(),
         NicEgress(),
         NicComputeChecksum(),
         NicDeparser()) main;
