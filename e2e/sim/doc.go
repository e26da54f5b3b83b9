// Package sim proves the whole system on simulated networks: real client
// nodes (client/chat) and real bootstrap servers (bootstrap-server/rendezvous)
// run in-process on netsim, inside a testing/synctest bubble, next to the
// original's test doubles (e2e/original).
//
// Every scenario is seeded and replays exactly: a failing test logs the
// command that reruns it (NETSIM_SEED=... go test -run ...), and the
// property tests print their -rapid.seed. Timing bounds are derived from
// the protocol's constants (chat.StartupBurst, chat.QueryAnswerMax, the
// announce interval and timeouts, the rendezvous backoff), never guessed.
// ../README.md lists the scenarios.
//
// The package has no code of its own outside its tests.
package sim
