// Package chat is an embeddable Parlance node: LAN discovery by UDP
// multicast, direct messages over TCP, and (in internet mode) discovery
// through a bootstrap server. The parlance program is a terminal UI around
// it; e2e tests start nodes in-process on simulated networks with it.
//
// # Using it
//
//	node, err := chat.Start(ctx, chat.Config{
//		Network:  host,            // *netsim.Host, or chat.OSNetwork{} for real sockets
//		Nickname: "alice",
//		Rand:     rand.New(rand.NewPCG(seed, 0)),
//	})
//	defer node.Close()             // sends goodbye, closes sockets, waits for goroutines
//	for ev := range node.Events() { ... }  // messages, peers joining and leaving
//	res, err := node.Send(ctx, "bob", "hi") // res.Status: Delivered or Sent
//
// # Design
//
// Every socket comes from Config.Network; the package never opens one
// itself. One event loop per node owns the peer registry
// (protocol/registry), the discovery timers and the random source, so a
// node run on netsim inside a synctest bubble replays exactly for a seed.
// Send does its network I/O in the caller's goroutine and asks the loop
// only to resolve the peer.
//
// Discovery (local mode) follows the original protocol and adds, as
// optional extensions, an instance id, capabilities, a query datagram and
// a goodbye: a starting node announces at once and queries (once: an
// original peer logs a warning per query); peers answer a query, or a
// peer new to them, with an announce after a random 20-120 ms; two more
// announces at 300 ms and 1.2 s cover lost first datagrams; then an
// announce every AnnounceInterval, jittered by ±10%. A goodbye removes a
// peer at once; a silent peer expires after Timeout.
//
// Messages to peers that advertise the "ack" capability carry an id and
// wait for the ack on the same connection, which is kept open for reuse;
// a reused connection found closed is redialled once and the message sent
// again (receivers drop duplicates by id), so the result is either
// Delivered or an error. Original peers get the original's
// one-connection-per-message, and the result is Sent.
//
// # Identity, sessions and trust
//
// A node has a long-term Ed25519 identity key (Config.Identity; the
// program keeps it in the profile, client/identity). It signs announces,
// goodbyes and registrations, and every message to a peer that announced
// a key and the "noise" capability travels inside a session
// (client/session) whose handshake must prove that key: a peer at the
// announced address that proves another key gets nothing (ErrKeyMismatch,
// EventSecurity). Received announces are checked in verify.go: a signature
// is verified only when the announce would change what the registry holds
// (a new peer, address, nickname, caps or key), not on every refresh, so a
// LAN of many peers costs no signature check per announce interval.
//
// Trust on first use: the event loop owns the known-peers store
// (Config.Trust, client/trust), pins a nickname to the key of the first
// successful session in either direction, and Send refuses what the user
// did not accept: a key other than the pinned one (ErrKeyChanged, until
// Trust with the new key's fingerprint), plaintext to a pinned nickname
// (ErrDowngrade), and with RequireEncryption any plaintext
// (ErrUnencrypted). Original peers keep working in plaintext, and their
// messages say so (Message.Encrypted, Message.Trust).
package chat
