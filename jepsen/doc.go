// Package jepsen is capkv's partition-testing harness: clusters under test,
// nemeses that inject faults, workloads that record histories, and checkers
// that decide whether the promised guarantees held.
//
// Histories are strict: every operation carries monotonic invoke and
// completion times; an operation whose outcome is unknown (a timeout, a
// broken connection) is recorded as Unknown and modelled as "may have taken
// effect at any time after its invocation"; a checker that cannot decide
// (porcupine's Unknown) counts as a failure, never a pass.
package jepsen
