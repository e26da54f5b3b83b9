package protocol

import (
	"crypto/ed25519"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testKey is a fixed identity key, so the signatures below are pinned.
func testKey(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	return ed25519.NewKeyFromSeed(seed)
}

var signTime = time.UnixMilli(1795739259123)

// The wire form of a signed announce, byte for byte: an original peer
// reads nickname and tcp_port and ignores the rest.
func TestSignedAnnounceGolden(t *testing.T) {
	a := &Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{"query", "goodbye", "ack", "noise"}}
	a.Sign(testKey(1), signTime)
	got, err := EncodeDatagram(a)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack","noise"],` +
		`"key":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","ts":1795739259123,` +
		// Ed25519 signatures are deterministic, so the signature is
		// pinned too: the signed bytes are part of the wire format.
		`"sig":"+t69M5uItBNZ/COTpU8Ik/RizcgiRhge59tsMaxvl0OOsNFUu/lCN4NAJdN1kvfFe+kJDYm51QN7Grq64CIpAw=="}`
	if string(got) != want {
		t.Fatalf("announce wire form:\n got %s\nwant %s", got, want)
	}
	d, err := DecodeDatagram(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.(*Announce).Verify(); err != nil {
		t.Errorf("decoded announce does not verify: %v", err)
	}
	// The fast path and encoding/json agree on it.
	slow, err := decodeDatagramSlow(got)
	if err != nil || slow.(*Announce).Signature != d.(*Announce).Signature {
		t.Errorf("slow path: %+v, %v", slow, err)
	}
}

func TestSignaturesCoverEveryField(t *testing.T) {
	key := testKey(2)
	base := func() *Announce {
		a := &Announce{Nickname: "alice", TCPPort: 4000, Instance: "abc", Caps: []string{"noise"}}
		a.Sign(key, signTime)
		return a
	}
	tests := []struct {
		name   string
		change func(a *Announce)
		want   error
	}{
		{"untouched", func(*Announce) {}, nil},
		{"nickname", func(a *Announce) { a.Nickname = "mallory" }, ErrBadSignature},
		{"port", func(a *Announce) { a.TCPPort = 4001 }, ErrBadSignature},
		{"instance", func(a *Announce) { a.Instance = "abd" }, ErrBadSignature},
		{"caps stripped", func(a *Announce) { a.Caps = nil }, ErrBadSignature},
		{"timestamp", func(a *Announce) { a.TS++ }, ErrBadSignature},
		{"another key", func(a *Announce) { a.Key = EncodePublicKey(testKey(3).Public().(ed25519.PublicKey)) }, ErrBadSignature},
		{"key stripped", func(a *Announce) { a.Signature = Signature{} }, ErrUnsigned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := base()
			tt.change(a)
			if err := a.Verify(); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("an announce signature is no goodbye signature", func(t *testing.T) {
		a := base()
		g := &Goodbye{Nickname: a.Nickname, Instance: a.Instance, Signature: a.Signature}
		if err := g.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("goodbye with an announce's signature: %v", err)
		}
	})
	t.Run("register", func(t *testing.T) {
		r := &Register{Nickname: "alice", LocalAddr: "0.0.0.0:4000", Instance: "abc", Caps: []string{"push"}, Namespace: "team"}
		r.Sign(key, signTime)
		if err := r.Verify(); err != nil {
			t.Fatal(err)
		}
		r.Namespace = "other"
		if err := r.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("register with another namespace: %v", err)
		}
		r.Namespace = "team"
		r.Addrs = []string{"10.0.0.9:4000"}
		if err := r.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("register with an added address: %v", err)
		}
	})
}

func TestSignatureFieldsDecode(t *testing.T) {
	a := &Announce{Nickname: "bob", TCPPort: 1}
	a.Sign(testKey(4), signTime)
	key, sig := a.Key, a.Sig
	tests := []struct {
		name, in, want string
	}{
		{"key without ts and sig", `{"type":"announce","nickname":"bob","tcp_port":1,"key":"` + key + `"}`, "field `ts` must be a positive integer"},
		{"short key", `{"type":"announce","nickname":"bob","tcp_port":1,"key":"AAAA","ts":1,"sig":"` + sig + `"}`, "field `key`: not a base64 Ed25519 public key"},
		{"short sig", `{"type":"announce","nickname":"bob","tcp_port":1,"key":"` + key + `","ts":1,"sig":"AAAA"}`, "field `sig` must be a base64 Ed25519 signature"},
		{"sig without key", `{"type":"announce","nickname":"bob","tcp_port":1,"sig":"` + sig + `"}`, "field `key`"},
		{"negative ts", `{"type":"announce","nickname":"bob","tcp_port":1,"key":"` + key + `","ts":-5,"sig":"` + sig + `"}`, "field `ts` must be a positive integer"},
		{"register key not base64", `{"type":"register","nickname":"a","local_addr":"0.0.0.0:1","key":"` + strings.Repeat("!", 44) + `","ts":1,"sig":"` + sig + `"}`, "field `key`"},
		{"register addrs not ip:port", `{"type":"register","nickname":"a","local_addr":"0.0.0.0:1","addrs":["10.0.0.1"]}`, "field `addrs` entry \"10.0.0.1\" is not ip:port"},
		{"register addrs port zero", `{"type":"register","nickname":"a","local_addr":"0.0.0.0:1","addrs":["10.0.0.1:0"]}`, "field `addrs` entry"},
		{"register too many addrs", `{"type":"register","nickname":"a","local_addr":"0.0.0.0:1","addrs":["1.1.1.1:1","1.1.1.1:2","1.1.1.1:3","1.1.1.1:4","1.1.1.1:5","1.1.1.1:6","1.1.1.1:7","1.1.1.1:8","1.1.1.1:9"]}`, "more than 8 entries"},
		{"peer list key not base64", `{"type":"peer_list","peers":[{"peer_id":"x","nickname":"a","public_addr":"1.2.3.4:5","local_addr":"0.0.0.0:5","last_seen":1,"key":"nope"}]}`, "field `key`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			switch {
			case strings.Contains(tt.in, `"register"`):
				_, err = DecodeClientMessage([]byte(tt.in))
			case strings.Contains(tt.in, `"peer_list"`):
				_, err = DecodeServerMessage([]byte(tt.in))
			default:
				_, err = DecodeDatagram([]byte(tt.in))
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrMalformed with %q", err, tt.want)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	pub := testKey(1).Public().(ed25519.PublicKey)
	fp := Fingerprint(pub)
	if len(fp) != 63 || strings.Count(fp, "-") != 7 {
		t.Fatalf("fingerprint %q: want 8 groups of 7 joined by dashes", fp)
	}
	if fp != "GR2Q7GF-5LH6PZD-FDNURNK-VPUTHPX-QVJJFVB-FHBYSVU-7IKDGKB-PTZF7A6" {
		t.Errorf("fingerprint of the fixed key changed: %s", fp)
	}
	if !CheckFingerprint(fp) || !CheckFingerprint(strings.ToLower(strings.ReplaceAll(fp, "-", " "))) {
		t.Errorf("CheckFingerprint refuses %s", fp)
	}
	// One mistyped character is caught by the check characters.
	for i := 0; i < len(fp); i++ {
		if fp[i] == '-' {
			continue
		}
		typo := []byte(fp)
		typo[i] = fpAlphabet[(strings.IndexByte(fpAlphabet, fp[i])+1)%32]
		if CheckFingerprint(string(typo)) {
			t.Errorf("typo at %d not caught: %s", i, typo)
		}
	}
	if ShortFingerprint(pub) != fp[:7] || KeyFingerprint(EncodePublicKey(pub)) != fp || KeyFingerprint("junk") != "" {
		t.Error("short, key and junk fingerprints disagree")
	}
	if got, ok := NormalizeFingerprint("gr2q-7gf"); !ok || got != "GR2Q7GF" {
		t.Errorf("NormalizeFingerprint = %q %v", got, ok)
	}
	if _, ok := NormalizeFingerprint("8c1d"); ok {
		t.Error("8 and 1 are not base32: an instance prefix is no fingerprint")
	}
}

func TestPunchLines(t *testing.T) {
	b, err := EncodePunch(&Punch{Punch: PunchConnect, Addrs: []string{"203.0.113.5:41135"}})
	if want := `{"punch":"connect","addrs":["203.0.113.5:41135"]}` + "\n"; err != nil || string(b) != want {
		t.Fatalf("connect: %q, %v; want %q", b, err, want)
	}
	if b, _ := EncodePunch(&Punch{Punch: PunchSync}); string(b) != `{"punch":"sync"}`+"\n" {
		t.Errorf("sync: %q", b)
	}
	for _, bad := range []string{`{"punch":"now"}`, `{"punch":"connect","addrs":["nowhere"]}`, `{"addrs":[]}`, `{"from":"a","content":"x","timestamp":1}`} {
		if _, err := DecodePunch([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodePunch(%s) = %v, want ErrMalformed", bad, err)
		}
	}
}

// Room tags for the tests below (RoomTagLen lowercase hex each).
const (
	tagA = "0f1e2d3c4b5a69788796a5b4"
	tagB = "c3d2e1f00112233445566778"
)

// An announce with rooms signs "announce/v2" with the rooms joined by
// commas after caps; without rooms it signs exactly the v1 bytes, so the
// pinned v1 signature above still verifies. The v2 form is pinned too.
func TestSignedAnnounceWithRoomsGolden(t *testing.T) {
	a := &Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{"query", "goodbye", "ack", "noise", "rooms"}, Rooms: []string{tagA, tagB}}
	a.Sign(testKey(1), signTime)
	got, err := EncodeDatagram(a)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack","noise","rooms"],` +
		`"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778"],` +
		`"key":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","ts":1795739259123,` +
		`"sig":"FUh1LmLubGiTtt7umMruUU2GLgELB6xDD1ZsKTVBdEaWhG/hI1PSBrxgUNrTHGxuqva/nJmioQDTXQKoRKnXAA=="}`
	if string(got) != want {
		t.Fatalf("announce wire form:\n got %s\nwant %s", got, want)
	}
	d, err := DecodeDatagram(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.(*Announce).Verify(); err != nil {
		t.Errorf("decoded announce does not verify: %v", err)
	}
	slow, err := decodeDatagramSlow(got)
	if err != nil || !reflect.DeepEqual(slow, d) {
		t.Errorf("slow path: %+v, %v; fast path %+v", slow, err, d)
	}
}

// The signed bytes, spelt out: the domain, a zero byte, then each field
// as its length (one byte here, a uvarint) and its bytes.
func TestSignedBytesWithAndWithoutRooms(t *testing.T) {
	field := func(s string) string { return string(rune(len(s))) + s }
	a := &Announce{Nickname: "bob", TCPPort: 7, Instance: "i", Caps: []string{"ack", "noise"}}
	v1 := "parlance/announce/v1\x00" + field("bob") + field("7") + field("i") + field("ack,noise") + field("42")
	if got := string(a.signed(42)); got != v1 {
		t.Errorf("announce without rooms signs %q, want %q", got, v1)
	}
	a.Rooms = []string{tagA, tagB}
	v2 := "parlance/announce/v2\x00" + field("bob") + field("7") + field("i") + field("ack,noise") + field(tagA+","+tagB) + field("42")
	if got := string(a.signed(42)); got != v2 {
		t.Errorf("announce with rooms signs %q, want %q", got, v2)
	}
	r := &Register{Nickname: "bob", LocalAddr: "0.0.0.0:7", Instance: "i", Caps: []string{"push"}, Namespace: "ns", Addrs: []string{"10.0.0.1:7"}}
	rv1 := "parlance/register/v1\x00" + field("bob") + field("0.0.0.0:7") + field("i") + field("push") + field("ns") + field("10.0.0.1:7") + field("42")
	if got := string(r.signed(42)); got != rv1 {
		t.Errorf("register without rooms signs %q, want %q", got, rv1)
	}
	r.Rooms = []string{tagA}
	rv2 := "parlance/register/v2\x00" + field("bob") + field("0.0.0.0:7") + field("i") + field("push") + field("ns") + field("10.0.0.1:7") + field(tagA) + field("42")
	if got := string(r.signed(42)); got != rv2 {
		t.Errorf("register with rooms signs %q, want %q", got, rv2)
	}
}

func TestRoomTagsAreSigned(t *testing.T) {
	key := testKey(2)
	announce := func() *Announce {
		a := &Announce{Nickname: "alice", TCPPort: 4000, Instance: "abc", Caps: []string{"noise", "rooms"}, Rooms: []string{tagA, tagB}}
		a.Sign(key, signTime)
		return a
	}
	register := func() *Register {
		r := &Register{Nickname: "alice", LocalAddr: "0.0.0.0:4000", Instance: "abc", Caps: []string{"push"}, Rooms: []string{tagA, tagB}}
		r.Sign(key, signTime)
		return r
	}
	tests := []struct {
		name   string
		change func(rooms *[]string)
		want   error
	}{
		{"untouched", func(*[]string) {}, nil},
		{"a tag changed", func(r *[]string) { (*r)[1] = "c3d2e1f00112233445566779" }, ErrBadSignature},
		{"a tag added", func(r *[]string) { *r = append(*r, "00000000000000000000000a") }, ErrBadSignature},
		{"a tag removed", func(r *[]string) { *r = (*r)[:1] }, ErrBadSignature},
		{"tags reordered", func(r *[]string) { (*r)[0], (*r)[1] = (*r)[1], (*r)[0] }, ErrBadSignature},
		{"every tag stripped", func(r *[]string) { *r = nil }, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run("announce: "+tt.name, func(t *testing.T) {
			a := announce()
			tt.change(&a.Rooms)
			if err := a.Verify(); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
		t.Run("register: "+tt.name, func(t *testing.T) {
			r := register()
			tt.change(&r.Rooms)
			if err := r.Verify(); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("tags added to a v1 announce", func(t *testing.T) {
		a := &Announce{Nickname: "alice", TCPPort: 4000, Instance: "abc", Caps: []string{"noise"}}
		a.Sign(key, signTime)
		a.Rooms = []string{tagA}
		if err := a.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify = %v, want ErrBadSignature", err)
		}
	})
}
