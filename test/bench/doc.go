// Package bench measures mlplane end to end, as a cluster would load it, side
// by side with a baseline in the same run (issue 7, BENCHMARKS.md):
//
//   - the webhook under load over TLS against a no-op controller-runtime
//     webhook (RunLoad, WebhookBench);
//   - scheduling throughput on the local control plane with and without the
//     extender (SchedBench);
//   - the node agent's footprint (AgentFootprint);
//   - packing, from `extender simulate` (Packing).
//
// The go benchmarks of this package (bench_test.go) measure the webhook
// handler against pod size and the extender's verbs against cluster size.
// hack/bench is the command line; hack/bench.sh and hack/bench-long.sh run
// everything. Nothing here is part of make test.
package bench
