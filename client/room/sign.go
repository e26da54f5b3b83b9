package room

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/parlance-chat/parlance/protocol"
)

// ErrBadSignature: a room message's signature does not verify with its
// author's key.
var ErrBadSignature = errors.New("room: signature does not verify")

// Sign sets m's author to priv's public key and m's sig to priv's
// signature over protocol.RoomSigningBytes(m).
func Sign(priv ed25519.PrivateKey, m *protocol.RoomMessage) {
	m.Author = protocol.EncodePublicKey(priv.Public().(ed25519.PublicKey))
	m.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, protocol.RoomSigningBytes(m)))
}

// Verify checks m's signature with the key in m.Author. The signed bytes
// include the room ID, so a message moved to another room does not verify.
func Verify(m *protocol.RoomMessage) error {
	pub, err := protocol.ParsePublicKey(m.Author)
	if err != nil {
		return fmt.Errorf("room message: author: %v: %w", err, ErrBadSignature)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(m.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("room message: sig is not a base64 Ed25519 signature: %w", ErrBadSignature)
	}
	if !ed25519.Verify(pub, protocol.RoomSigningBytes(m), sig) {
		return fmt.Errorf("room message %s/%d: %w", protocol.KeyFingerprint(m.Author)[:7], m.Seq, ErrBadSignature)
	}
	return nil
}
