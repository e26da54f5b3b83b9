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
//	res, err := node.Send(ctx, "bob", "hi") // res.Status: Delivered, Queued or Sent
//	out, err := node.Post(ctx, "bob", "hi") // at once; out.Wait(ctx) later
//	_, err = node.JoinRoom(ctx, "#team", "")  // a public room; a secret makes it private
//	_, err = node.PostRoom(ctx, "#team", "hi all")
//
// # Design
//
// Every socket comes from Config.Network; the package never opens one
// itself. One event loop per node owns the peer registry
// (protocol/registry), the discovery timers and the random source, so a
// node run on netsim inside a synctest bubble replays exactly for a seed.
// Post asks the loop only to resolve the peer; the I/O is the outbox's.
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
// # Messages: stored, queued, pipelined
//
// Every message sent and received is kept in Config.Store (client/store;
// a store in memory when nil). A message to a peer with a key is stored
// (Pending) before Post's caller hears anything, and goes through that
// key's outbox (outbox.go): one runner per key writes up to Window
// messages on one kept-open connection before the first ack returns,
// matches acks by id and records deliveries (group-committed), so one
// sender to one receiver runs at the rate of batches, not round trips.
// If the peer is away or the connection fails, the messages stay in the
// store and the result is Queued; the runner starts again when the key
// is seen (any registry change for it) or, for a listed peer that does
// not answer, after a backoff, and writes the unacknowledged ones again
// in order. A receiver stores a batch of lines (duplicates by id are
// dropped: the store remembers every id), shows the new ones and only
// then acknowledges the batch, so Delivered means "on the receiver's
// disk", and a resend after a lost ack or a restart is never shown
// twice. Messages queued for MessageTTL expire (EventExpired); they carry
// their expiry on the wire and a receiver drops one that arrives late,
// and none is written within AckTimeout of its expiry, so nothing is
// shown after its sender was told it expired. Peers without a key
// (original clients) are not queued: ack-capable ones get one message at
// a time on a kept-open connection (Delivered or an error), original ones
// the original's one connection per message (Sent).
//
// # Rooms
//
// JoinRoom, PostRoom and the room events give group conversations that no
// server holds (rooms.go; client/room is the pure part). A peer is a
// member of a room when its signed announce or registration carries its
// tag for the room; room messages are signed by their authors, sent to
// every member over pairwise sessions, stored, shown in causal order once
// each, and caught up by summary exchanges (on meeting, on each new
// session, every RoomSyncInterval when it changed). rooms.go's comment says why it is
// built this way.
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
