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
package chat
