package cli

import (
	"crypto/ed25519"
	"fmt"
	"path/filepath"

	"github.com/parlance-chat/parlance/client/identity"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
)

// profile is what a nickname keeps across runs: its identity key and the
// keys it pinned for others.
type profile struct {
	dataDir      string // where profiles live
	dir          string // this nickname's profile
	identityFile string
	key          ed25519.PrivateKey
	created      bool // the key was made on this start
	trust        *trust.Store
	store        *store.Store // messages: history and the offline queue
}

// MessagesFile is the profile's message database.
const MessagesFile = "messages.db"

// openProfile loads (or, on first start, creates) the profile of the
// nickname in s: the data dir from the config or flags, else the XDG
// default; the identity file from the config or flags, else the
// profile's.
func openProfile(s Settings, getenv func(string) string) (*profile, error) {
	p := &profile{dataDir: s.Config.Profile.DataDir}
	if p.dataDir == "" {
		d, err := identity.DataDir(getenv)
		if err != nil {
			return nil, fmt.Errorf("profile: %w (set --data-dir)", err)
		}
		p.dataDir = d
	}
	p.dir = identity.ProfileDir(p.dataDir, s.Nickname)
	p.identityFile = s.Config.Profile.IdentityFile
	if p.identityFile == "" {
		p.identityFile = filepath.Join(p.dir, identity.KeyFile)
	}
	var err error
	if p.key, p.created, err = identity.LoadOrCreate(p.identityFile, nil); err != nil {
		return nil, err
	}
	if p.trust, err = trust.Open(filepath.Join(p.dir, trust.KnownPeersFile)); err != nil {
		return nil, err
	}
	if p.store, err = store.Open(filepath.Join(p.dir, MessagesFile), store.Options{FoldWait: store.DefaultFoldWait}); err != nil {
		return nil, err
	}
	return p, nil
}
