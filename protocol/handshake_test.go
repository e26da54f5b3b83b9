package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Fixed keys for the handshake golden tests: identity seeds 0x00..0x1f
// (alice) and 0x40..0x5f (mallory), static key 0xa0..0xbf.
func handshakeTestIdentity(first byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = first + byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func handshakeTestStatic(first byte) []byte {
	s := make([]byte, StaticKeySize)
	for i := range s {
		s[i] = first + byte(i)
	}
	return s
}

const (
	handshakeGoldenKey     = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
	handshakeGoldenSig     = "EYcUAy46jY9a06KXUJuMQuU2GX8mmRnJbgfLX0Y0CsZOAMgjQFADZdRB+qYomdVU7MVnb3CBCnlJ6AJQ/R7OBw=="
	handshakeGoldenPayload = `{"key":"` + handshakeGoldenKey + `","sig":"` + handshakeGoldenSig + `","nickname":"alice","instance":"8c1d2e4f5a6b7c8d"}`
)

func TestGoldenHandshakePayload(t *testing.T) {
	alice, static := handshakeTestIdentity(0x00), handshakeTestStatic(0xa0)
	tests := []struct {
		name string
		msg  *HandshakePayload
		wire string
	}{
		{"payload with instance", &HandshakePayload{Key: handshakeGoldenKey, Sig: handshakeGoldenSig, Nickname: "alice", Instance: "8c1d2e4f5a6b7c8d"}, handshakeGoldenPayload},
		{"payload without instance", &HandshakePayload{Key: handshakeGoldenKey, Sig: handshakeGoldenSig, Nickname: "alice"},
			`{"key":"` + handshakeGoldenKey + `","sig":"` + handshakeGoldenSig + `","nickname":"alice"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeHandshakePayload(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wire {
				t.Errorf("encode:\n got %s\nwant %s", got, tt.wire)
			}
			back, err := DecodeHandshakePayload([]byte(tt.wire))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("decode: got %#v, want %#v", back, tt.msg)
			}
			key, err := back.VerifyStatic(static)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if !key.Equal(alice.Public()) {
				t.Errorf("verify returned key %s, want alice's", EncodePublicKey(key))
			}
		})
	}

	t.Run("signing gives the pinned key and signature", func(t *testing.T) {
		p := &HandshakePayload{Nickname: "alice", Instance: "8c1d2e4f5a6b7c8d"}
		p.SignStatic(alice, static)
		if p.Key != handshakeGoldenKey || p.Sig != handshakeGoldenSig {
			t.Errorf("SignStatic:\n got key %s sig %s\nwant key %s sig %s", p.Key, p.Sig, handshakeGoldenKey, handshakeGoldenSig)
		}
	})
	t.Run("the signature covers the prefix and the static key, nothing else", func(t *testing.T) {
		p, _ := DecodeHandshakePayload([]byte(handshakeGoldenPayload))
		sig, _ := parseCanonicalSig(p.Sig)
		msg := append([]byte("parlance-noise-static-key:"), static...)
		if !ed25519.Verify(alice.Public().(ed25519.PublicKey), msg, sig) {
			t.Error("the golden signature does not verify over the documented bytes")
		}
	})
	t.Run("the payload fits its bound with the longest fields", func(t *testing.T) {
		p := &HandshakePayload{Nickname: strings.Repeat("n", MaxNicknameLen), Instance: strings.Repeat("i", MaxInstanceLen)}
		p.SignStatic(alice, static)
		b, err := EncodeHandshakePayload(p)
		if err != nil || len(b) > MaxHandshakePayloadSize/2 {
			t.Errorf("longest payload is %d bytes (%v), want at most half of %d", len(b), err, MaxHandshakePayloadSize)
		}
	})
}

func TestDecodeHandshakePayloadRefuses(t *testing.T) {
	with := func(field, value string) string {
		p := map[string]string{"key": `"` + handshakeGoldenKey + `"`, "sig": `"` + handshakeGoldenSig + `"`, "nickname": `"alice"`, "instance": `"8c1d2e4f5a6b7c8d"`}
		var b strings.Builder
		b.WriteString("{")
		for _, f := range []string{"key", "sig", "nickname", "instance"} {
			v := p[f]
			if f == field {
				v = value
			}
			if v == "" {
				continue
			}
			if b.Len() > 1 {
				b.WriteString(",")
			}
			b.WriteString(`"` + f + `":` + v)
		}
		b.WriteString("}")
		return b.String()
	}
	tests := []struct {
		name string
		wire string
		want error
	}{
		{"input over the bound", `{"key":"` + strings.Repeat(" ", MaxHandshakePayloadSize) + `"}`, ErrTooLarge},
		{"invalid UTF-8", "{\"nickname\":\"\xff\"}", ErrInvalidUTF8},
		{"not JSON", `hello`, ErrMalformed},
		{"a JSON array", `[]`, ErrMalformed},
		{"missing key", with("key", ""), ErrMalformed},
		{"missing sig", with("sig", ""), ErrMalformed},
		{"missing nickname", with("nickname", ""), ErrMalformed},
		{"key that is a number", with("key", "1"), ErrMalformed},
		{"key too short", with("key", `"`+handshakeGoldenKey[:40]+`"`), ErrMalformed},
		{"key not base64", with("key", `"`+strings.Repeat("!", 44)+`"`), ErrMalformed},
		{"key in non-canonical base64", with("key", `"`+handshakeGoldenKey[:42]+`h="`), ErrMalformed},
		{"sig too short", with("sig", `"`+handshakeGoldenSig[:84]+`"`), ErrMalformed},
		{"sig in non-canonical base64", with("sig", `"`+handshakeGoldenSig[:85]+`x=="`), ErrMalformed},
		{"empty nickname", with("nickname", `""`), ErrMalformed},
		{"nickname with a control character", with("nickname", `"al\u001bice"`), ErrMalformed},
		{"nickname over 32 bytes", with("nickname", `"`+strings.Repeat("a", 33)+`"`), ErrMalformed},
		{"instance with a space", with("instance", `"8c1d 2e4f"`), ErrMalformed},
		{"instance over 64 bytes", with("instance", `"`+strings.Repeat("a", 65)+`"`), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodeHandshakePayload([]byte(tt.wire))
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeHandshakePayload(%s) = %#v, %v; want an error wrapping %v", tt.wire, p, err, tt.want)
			}
		})
	}
	t.Run("the canonical spellings still decode", func(t *testing.T) {
		if _, err := DecodeHandshakePayload([]byte(with("", ""))); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEncodeHandshakePayloadRefusesWhatDecodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		msg  HandshakePayload
	}{
		{"unsigned payload", HandshakePayload{Nickname: "alice"}},
		{"invalid nickname", HandshakePayload{Key: handshakeGoldenKey, Sig: handshakeGoldenSig, Nickname: " alice"}},
		{"invalid instance", HandshakePayload{Key: handshakeGoldenKey, Sig: handshakeGoldenSig, Nickname: "alice", Instance: "a/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := EncodeHandshakePayload(&tt.msg); !errors.Is(err, ErrMalformed) {
				t.Errorf("EncodeHandshakePayload(%#v) = %s, %v; want ErrMalformed", tt.msg, b, err)
			}
		})
	}
}

func TestVerifyStatic(t *testing.T) {
	alice, mallory := handshakeTestIdentity(0x00), handshakeTestIdentity(0x40)
	static, other := handshakeTestStatic(0xa0), handshakeTestStatic(0xc0)
	signed := func(priv ed25519.PrivateKey, s []byte) *HandshakePayload {
		p := &HandshakePayload{Nickname: "alice"}
		p.SignStatic(priv, s)
		return p
	}
	swapKey := signed(mallory, static)
	swapKey.Key = EncodePublicKey(alice.Public().(ed25519.PublicKey))
	wrongDomain := &HandshakePayload{Key: handshakeGoldenKey, Nickname: "alice",
		Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(alice, static))}

	tests := []struct {
		name   string
		p      *HandshakePayload
		static []byte
		want   error
	}{
		{"signature over this static key", signed(alice, static), static, nil},
		{"signature over another static key", signed(alice, other), static, ErrBadSignature},
		{"signature by another identity key", swapKey, static, ErrBadSignature},
		{"signature without the domain prefix", wrongDomain, static, ErrBadSignature},
		{"static key of the wrong length", signed(alice, static), static[:31], ErrBadSignature},
		{"malformed key", &HandshakePayload{Key: "x", Sig: handshakeGoldenSig}, static, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := tt.p.VerifyStatic(tt.static)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("VerifyStatic = %v, want %v", err, tt.want)
			}
			if want, _ := ParsePublicKey(tt.p.Key); err == nil && !bytes.Equal(key, want) {
				t.Errorf("VerifyStatic returned %x, want the payload's key", key)
			}
		})
	}
}
