// Package archtest checks the module's package boundaries from its source:
// the rules of DESIGN.md and STYLE.md that the compiler does not enforce.
// Check parses every Go file of a module tree and returns what breaks a rule;
// this package's test runs it on the repository, so plain `go test ./...`
// (and `make test`) enforces the rules.
//
// Rules:
//
//   - badger-only-in-shard: only shard/ (and below) imports
//     github.com/dgraph-io/badger, any version or subpackage, test files
//     included. Everything else reaches storage through shard's API, so the
//     storage engine can change in one package.
//   - pure-core: the non-test files of ring/ and consistency/ (and below)
//     import no network, OS or process package (net, os, syscall, gRPC, ...)
//     and do not read the clock (time.Now, time.Since, time.Sleep, timers,
//     ...), neither by calling it nor by taking it as a function value. Time
//     and I/O are their callers' inputs, which keeps them deterministic and
//     exhaustively testable. Using time's types and pure functions
//     (time.Duration, time.Unix) is fine.
//
// Each Violation names the file, the line and the rule.
package archtest
