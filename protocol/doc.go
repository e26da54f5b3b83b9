// Package protocol defines Parlance's wire format: the Go types of every
// message, codecs with bounded input, and the nickname rules.
//
// The baseline is the original Rust Parlance 0.1.0. Every message it sends or
// accepts is encoded here byte for byte as it does (compact JSON, fields in
// the original's order), so an original peer and ours interoperate. Our
// extensions follow three rules: a field added to an existing message is
// optional and its absence means the original behaviour; a new message type
// is only sent to a peer that advertised the matching capability, or is one
// whose loss changes nothing for an original peer; every decoder bounds its
// input.
//
// # LAN discovery (UDP multicast 239.255.255.250:6789)
//
// One JSON object per datagram, at most [MaxDatagramSize] bytes:
//
//	{"type":"announce","nickname":"bob","tcp_port":41135}
//	{"type":"goodbye","nickname":"bob"}
//
// A peer's address is the datagram's source IP plus tcp_port. Our peers add
// optional fields to both:
//
//	{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack"]}
//	{"type":"goodbye","nickname":"bob","instance":"8c1d2e4f5a6b7c8d"}
//
// instance is a random identifier chosen at start-up: it tells two peers with
// the same nickname apart, a restarted peer from its previous run, and our
// own announces from everybody else's. caps lists the optional features the
// sender understands (see the Cap constants). Later features (public keys,
// groups) add capabilities and optional fields the same way.
//
// A new peer asks everyone to announce now instead of waiting for their next
// interval:
//
//	{"type":"query","instance":"8c1d2e4f5a6b7c8d"}
//
// An original peer logs one warning for the unknown type and drops it, which
// changes nothing for it; our peers answer with an announce after a short
// random delay.
//
// # Direct messages (TCP, one JSON line per message)
//
// (Between two of our peers these lines travel inside an encrypted session,
// see above; with an original peer, in plaintext.)
//
// Each line is at most [MaxLineSize] bytes including its newline:
//
//	{"from":"alice","content":"hello bob","timestamp":1795739259}
//
// timestamp is the sender's clock in Unix seconds. Our senders add an
// optional message id and their instance id (so a receiver can tell apart
// two senders called alice), and, when the receiver advertised [CapAck],
// the receiver answers on the same connection with an acknowledgement line
// so the sender knows the message was delivered:
//
//	{"from":"alice","content":"hello bob","timestamp":1795739259,"id":"5f0c1a2b3c4d5e6f","instance":"8c1d2e4f5a6b7c8d"}
//	{"ack":"5f0c1a2b3c4d5e6f"}
//
// An original receiver ignores the id and never answers; an original sender
// sends no id and gets no answer. A from that is not a valid nickname is
// not a decoding error: the receiver shows such a message marked.
//
// Acks are pipelined: a sender may write many lines (up to its window,
// 1,024 in ours) before the first ack comes back, and a receiver answers
// each line that carries an id, in order, once the message is stored, in
// as few writes as it likes. Acks are matched by id. A receiver keeps the
// ids it stored, so a line sent again after a lost ack (or a restart of
// either side) is acknowledged but not shown twice. A message that waited
// in the sender's offline queue carries when the sender gives up on it,
// in Unix seconds; a receiver that reads it later drops it unacknowledged,
// since the sender has by then told its user the message expired:
//
//	{"from":"alice","content":"are you back?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}
//
// # Identity keys and signed discovery
//
// Each of our peers has a long-term Ed25519 identity key. It adds [CapNoise]
// to its caps and three optional fields to announce and goodbye (and to
// register, below): key, its public key in standard base64 (44
// characters); ts, the time of signing in Unix milliseconds; sig, the
// Ed25519 signature (88 characters of base64):
//
//	{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack","noise"],"key":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","ts":1795739259123,"sig":"+t69M5uItBNZ/COTpU8Ik/RizcgiRhge59tsMaxvl0OOsNFUu/lCN4NAJdN1kvfFe+kJDYm51QN7Grq64CIpAw=="}
//	{"type":"goodbye","nickname":"bob","instance":"8c1d2e4f5a6b7c8d","key":"iojj…","ts":1795739262001,"sig":"…"}
//
// The signature covers "parlance/announce/v1", a zero byte, then nickname,
// tcp_port (decimal), instance, caps joined by commas and ts (decimal),
// each preceded by its length as a uvarint; a goodbye signs
// "parlance/goodbye/v1" with nickname, instance and ts, a register
// "parlance/register/v1" with nickname, local_addr, instance, caps,
// namespace and ts. Either all three fields are present or none; an
// original peer ignores them. A receiver takes an announce that places a
// key somewhere new (new peer, address, nickname, caps or instance) only
// with a valid signature, a ts within 10 minutes of its clock and newer
// than the last it saw from that key, so a forged or replayed announce
// cannot attach a known key to another address; it refuses an unsigned
// announce or goodbye for an instance that signed before (stripped caps).
// The source address is not signed (a sender cannot know it); the session
// handshake proves the key at that address before anything is sent.
//
// A peer that has joined rooms adds rooms to its announce and register:
// its membership tags, one per room, each [RoomTagLen] lowercase hex
// characters, at most [MaxRoomTags], none twice:
//
//	{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack","noise","rooms"],"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778"],"key":"iojj…","ts":1795739259123,"sig":"…"}
//
// A tag is derived from the room's key and the member's identity key (see
// client/room): it is not the room's name, and without the room's key two
// members' tags cannot be linked to each other or to the room. Since it is
// bound to the key that signs the message, a member checks a tag against
// the sender's key, and a tag copied into another peer's announce proves
// nothing. With rooms present the signature covers them: an announce signs
// "parlance/announce/v2" with the rooms joined by commas after caps (before
// ts), a register "parlance/register/v2" with them after addrs; with no
// rooms the signed bytes are exactly the v1 ones above. Adding, removing,
// changing or stripping a tag therefore breaks the signature, and a
// receiver takes a change of rooms, like a change of caps, only with a
// valid signature. Rooms in an unsigned message mean nothing (there is no
// key to check them against).
//
// A fingerprint is the SHA-256 of the public key in base32, in four blocks
// of 13 characters each followed by a Luhn mod 32 check character, shown in
// eight groups of seven: GR2Q7GF-5LH6PZD-FDNURNK-VPUTHPX-QVJJFVB-FHBYSVU-7IKDGKB-PTZF7A6.
// Its first group is the short form users see and type (bob#GR2Q7GF).
//
// # Encrypted sessions (direct messages between our peers)
//
// A sender whose receiver listed [CapNoise] and a key opens its TCP
// connection with the 8-byte preamble "\x00PRLNC1\n" (a NUL can never
// start a JSON line, so a receiver tells it from an original sender's
// plaintext by the first byte), then runs the Noise handshake
// Noise_XX_25519_ChaChaPoly_BLAKE2s. Every handshake and transport message
// is a 2-byte big-endian length and that many bytes (at most 65,535). The
// second and third handshake messages carry a payload of at most
// [MaxHandshakePayloadSize] bytes that binds the identity key to the Noise
// static key, as libp2p-noise does: sig signs "parlance-noise-static-key:"
// followed by the sender's 32-byte Noise static public key:
//
//	{"key":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","sig":"…","nickname":"bob","instance":"8c1d2e4f5a6b7c8d"}
//
// The initiator refuses a session whose key is not the one the peer
// announced. After the handshake, the chat lines and acks described below
// travel inside transport messages (a line may span several); the line
// bound applies to the decrypted stream. Replayed, dropped, reordered or
// altered transport messages fail authentication and end the connection.
// An original sender's connection carries plaintext lines as before.
//
// # Hole punching
//
// Two of our peers that talk through the relay and both list CapPunch
// ("punch") try to open a direct TCP connection through their NATs, as
// libp2p's DCUtR does: inside their session, the one that opened it sends
// {"punch":"connect","addrs":[...]} (where it can be dialled: the public
// address the server observed), the other answers with its own, the first
// measures that round trip, sends {"punch":"sync"} and dials half a round
// trip later while the other dials at once, each from its message
// listener's port, so that both SYNs cross the NATs at about the same
// time (a TCP simultaneous open). The direct connection then carries a new
// session that must prove the same key; the relayed one is closed. Each
// side dials from a port that its NAT must keep: a server of ours says in
// registered where it saw the connection come from ("observed":
// "203.0.113.5:51234"), and a client whose NAT changed the port (a
// symmetric NAT, usually) neither starts a try nor offers an address in
// its answer to connect ({"punch":"connect"} without addrs), so the
// conversation stays on the relay at once. On a punched connection,
// {"punch":"keepalive"} every 25 s keeps the NATs' mappings.
//
// # Internet discovery (WebSocket bootstrap server)
//
// One JSON object per text frame. A client sends frames of at most
// [MaxClientFrameSize] bytes; a server's frames (peer lists) may be up to
// [MaxServerFrameSize]. Client to server:
//
//	{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045"}
//	{"type":"list_peers"}
//	{"type":"heartbeat"}
//	{"type":"unregister"}
//
// Server to client:
//
//	{"type":"registered","peer_id":"f2cb7c76-c795-4ba9-a63e-71b1d1345eb8","public_addr":"127.0.0.1:40045"}
//	{"type":"peer_list","peers":[{"peer_id":"19c5e1eb-b897-49e4-b781-d187d0de38d6","nickname":"probe","public_addr":"127.0.0.1:40000","local_addr":"0.0.0.0:40000","last_seen":1795739225}]}
//	{"type":"error","message":"Not registered"}
//
// Extensions: register may carry instance, caps, namespace, addrs (the
// client's own addresses, "ip:port" of its message listener on each local
// interface, at most 8, so that peers behind the same NAT can connect
// without it) and the signature fields key, ts and sig described above
// (the signature covers addrs too) and rooms (membership tags, see
// above); peer entries carry addrs as registered; a server lists the key
// in peer_list and peer_joined entries ("key":"iojj…"), and the rooms
// ("rooms":["0f1e…"]), only after checking the signature. A register on
// a connection that is already registered, signed by the same key for
// the same namespace and asking for push and relay as before, updates
// the entry in place (a client whose rooms changed sends one): the
// server answers registered again with the same peer_id and relay_token
// (no new snapshot) and pushes a peer_joined with the new entry to the
// others, without a peer_left; any other second register replaces the
// first registration (peer_left, then a new peer_id). Peers in
// different namespaces never see each other, and the absent namespace is
// the default one that original clients share. A client that lists
// [CapPush] in register gets caps in its registered answer when the server
// supports pushing, then a peer_list snapshot, then one message per change
// instead of having to poll:
//
//	{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045","instance":"8c1d2e4f5a6b7c8d","caps":["push"],"namespace":"team"}
//	{"type":"registered","peer_id":"f2cb…","public_addr":"127.0.0.1:40045","caps":["push"]}
//	{"type":"peer_joined","peer":{"peer_id":"19c5…","nickname":"bob","public_addr":"127.0.0.1:40000","local_addr":"0.0.0.0:40000","last_seen":1795739225}}
//	{"type":"peer_left","peer_id":"19c5…"}
//
// # Relayed streams (through the bootstrap server)
//
// Two clients that cannot open TCP to each other (both behind NATs) can
// have the server relay a byte stream between them, and run their
// encrypted session inside it: the server sees ciphertext only. A client
// that lists [CapRelay] in register accepts relayed streams; a server
// that relays lists it in registered, with a relay_token (RelayTokenSize
// random bytes, unpadded base64url) that authenticates that client's
// relay WebSockets for as long as the registration lasts:
//
//	{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045","caps":["push","relay"]}
//	{"type":"registered","peer_id":"f2cb…","public_addr":"127.0.0.1:40045","caps":["push","relay"],"relay_token":"q7cY3nJ0wK2mZ5xV9sPdAg"}
//
// Each relayed stream is a WebSocket of its own, opened to the same URL
// as the control connection, whose first text frame says what it is. A
// connection per stream rather than streams multiplexed on the control
// connection: bulk data never delays heartbeats and pushes (no
// head-of-line blocking), each stream gets TCP's own backpressure, a
// per-stream limit is a per-connection limit, and on the client a relayed
// stream is simply a net.Conn. Alice (A) opens one to bob (B):
//
//	A -> server  {"type":"relay_connect","token":"q7cY3nJ0wK2mZ5xV9sPdAg","peer_id":"19c5e1eb-b897-49e4-b781-d187d0de38d6"}
//
// the server tells B on B's control connection:
//
//	server -> B  {"type":"relay_incoming","stream":"Hk2pQ0vX8rTz4LmN6bCyEw","peer_id":"f2cb7c76-c795-4ba9-a63e-71b1d1345eb8"}
//
// B opens a WebSocket of its own and accepts:
//
//	B -> server  {"type":"relay_accept","token":"Zm9vYmFyYmF6cXV4cXV1eA","stream":"Hk2pQ0vX8rTz4LmN6bCyEw"}
//
// and once both are there the server answers each on its relay WebSocket:
//
//	server -> A, B  {"type":"relay_ready","stream":"Hk2pQ0vX8rTz4LmN6bCyEw"}
//
// From then on only binary frames (each at most [MaxRelayFrameSize]
// bytes) and control frames travel on these two WebSockets; the server
// forwards each binary frame as it is. A close on one side closes the
// other; the end of either registration ends the stream. After
// relay_ready the server ends a stream with a close frame whose reason
// says why (1000 when the other side closed normally), never with a text
// frame, so data and control never interleave on the wire. Before it, a
// refusal is an error message and then a close frame:
//
//	{"type":"error","message":"Unknown or expired relay token"}
//
// The server relays only between registered peers of one namespace that
// both listed [CapRelay]; an original client is never offered a stream
// and cannot be reached. peer_id and stream are 1 to [MaxRelayIDLen]
// letters, digits, '.', '_' or '-'.
//
// # Rooms
//
// A peer that takes part in rooms lists [CapRooms] ("rooms") in its caps.
// Room traffic travels as lines inside the encrypted sessions, and only
// between two peers that both listed CapRooms and whose tags show both
// in the room: an original client is never sent a room line (it would
// show it as a message). Our client writes room lines on a session of
// their own, one way: the member that opened it writes, the other only
// reads, and nothing is acknowledged (a line lost with a connection comes
// back through the summaries). A receiver takes room lines only from a
// session whose proved key it lists as a member of that room. A chat line
// has no "type" key; a room line has one. Two lines, each at most
// [MaxLineSize] bytes with its newline:
//
//	{"type":"room_msg","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","author":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","nick":"bob","seq":7,"time":1795739259123,"deps":[{"a":"gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=","s":3}],"text":"hello room","sig":"4pKUswe4z7YD3KFFaFOhpsIiA/FWW4dUXw0QW3OWyF7wjGUDbl5Hc/i7x/nMo4OTOvg+kIrwlysTBErQUMhtAw=="}
//	{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[{"a":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","s":7}]}
//
// room_msg is one message of a room, written and signed by its author and
// forwarded as it is by any member:
//
//   - room: the room ID, [RoomIDLen] lowercase hex characters, derived
//     from the room's name and secret (see client/room); the name itself
//     is never sent.
//   - author: the author's identity key, as in announces (44 characters
//     of base64).
//   - nick: the author's nickname when it wrote the message. As for a
//     chat line's from, one that is not a valid nickname is not a
//     decoding error: the receiver shows it escaped and marked.
//   - seq: the author's sequence number in this room, 1 for its first
//     message and one more for each next, with no gaps; at most
//     [MaxRoomSeq] (2^53-1, exact in any JSON).
//   - time: the author's clock when it wrote, Unix milliseconds, positive.
//     For display only; order comes from seq and deps.
//   - deps: what the author had seen: for each other author whose highest
//     message it had shown changed since its own previous message in the
//     room, that author ("a") and seq ("s", at least 1). The author may
//     leave out an author whose seq is in the causal past of a dep it
//     lists (a message's past is its author's previous message and its
//     deps, and their pasts); when members speak in turn, deps is the last
//     speaker alone. Never the author itself (its seq-1 is implied), no
//     author twice, at most [MaxRoomMembers] entries; omitted when empty.
//     A receiver shows the message after its author's previous one and
//     after each dep, or after a bounded wait. It does the same for each
//     of those, so the message comes after all its author had seen.
//   - text: what the author wrote, as a chat line's content.
//   - sig: the author's Ed25519 signature (88 characters of base64) over
//     "parlance room message v1", a zero byte, then room, author and nick
//     (each its length as a uvarint and its bytes), seq and time (8 bytes
//     big-endian each), the number of deps (uvarint) and for each its
//     author (length-prefixed) and seq (8 bytes), in the order given, then
//     text (length-prefixed): every field but sig. The room ID is signed,
//     so a message cannot be moved to another room.
//
// room_sum tells a member what the sender holds: for each author, the
// highest seq it holds contiguously from the start of its history of that
// author (1, unless it joined after the author's first messages left
// everyone's bounded history). "have" is required, and empty from a member
// that holds nothing; at most [MaxRoomMembers] entries, seq at least 1, no
// author twice. "ask", optional, lists authors (keys, at most
// [MaxRoomMembers], none twice; "ask":[] is the same as none) whose
// messages the sender asks the receiver for:
//
//	{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[{"a":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","s":7}],"ask":["gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="]}
//
// Fetching is pulled, so that a member that missed something gets each
// message once rather than from every member that holds it. A summary
// that asks is answered with the room_msg lines of the asked authors that
// the sender lacks, oldest first, within the receiver's history bound (by
// default the last 500 messages, none older than 7 days). A summary that
// shows the sender holds more of some authors than the receiver makes the
// receiver ask it for them, in a summary of its own; one that does not ask
// and shows the sender lacks something is answered with the receiver's
// summary (at most once a second per member and room), so that the sender
// can ask. Our client asks one member per author at a time and asks again,
// of whoever shows it holds more, after 10 seconds without the answer.
// Members send their summaries to a member when they first see it in the
// room and first on every new session to it; and every 30 seconds each
// sends its summary to up to 8 members in turn (all, in a room that
// small), skipping one that was sent the same summary in the last 5
// minutes.
//
// Every field is required except deps; decoding checks their shapes, not
// the signature, which the receiver verifies before it keeps the message.
//
// # Bounds and errors
//
// Decoders refuse input over their bound with an error wrapping
// [ErrTooLarge], invalid UTF-8 with [ErrInvalidUTF8], and anything that is
// not a well-formed message of a known type with an error that names the
// problem (wrapping [ErrMalformed] or [ErrUnknownType]). They never panic.
// Like encoding/json, they match field names case-insensitively, which is
// more lenient than the original (serde) and harmless.
//
// DecodeDatagram, DecodeChatLine and DecodeAck have hand-written fast
// paths for the canonical layout (the bytes our encoders and the original
// write when no string needs an escape: keys in order, no whitespace) that
// return what the encoding/json path would; any other input, and every
// error, goes through encoding/json. Differential fuzz targets
// (FuzzDatagramFastPath, FuzzChatLineFastPath, FuzzAckFastPath) check the
// two agree. EncodeChatLine and EncodeAck (and AppendChatLine, AppendAck)
// write JSON by hand, byte for byte what encoding/json would write;
// FuzzAppendChatLine and FuzzAppendAck compare them.
package protocol
