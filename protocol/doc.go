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
// sends no id and gets no answer.
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
// Extensions: register may carry instance, caps and namespace; peers in
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
// # Bounds and errors
//
// Decoders refuse input over their bound with an error wrapping
// [ErrTooLarge], invalid UTF-8 with [ErrInvalidUTF8], and anything that is
// not a well-formed message of a known type with an error that names the
// problem (wrapping [ErrMalformed] or [ErrUnknownType]). They never panic.
// Like encoding/json, they match field names case-insensitively, which is
// more lenient than the original (serde) and harmless.
//
// DecodeDatagram has a hand-written fast path for the canonical layout (the
// exact bytes EncodeDatagram and the original produce: keys in order, no
// whitespace, no escapes) that returns what the encoding/json path would;
// any other input, and every error, goes through encoding/json. A
// differential fuzz target (FuzzDatagramFastPath) checks the two agree.
package protocol
