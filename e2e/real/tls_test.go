package real

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed ECDSA certificate for 127.0.0.1
// and localhost, and its key, as PEM into dir and returns their paths.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "parlance e2e bootstrap server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startPeerEnv is startPeer with extra environment.
func (s *scene) startPeerEnv(nick string, env []string, args ...string) *peer {
	s.t.Helper()
	args = append([]string{"--nickname", nick, "--log-level", "debug"}, args...)
	p := &peer{Process: s.ns.Start(s.t, nick, s.parlance, args, env...), t: s.t, nick: nick}
	_, line := p.WaitLine(0, bannerRE, wait)
	m := bannerRE.FindStringSubmatch(line)
	p.port, _ = strconv.Atoi(m[2])
	return p
}

// Internet mode over wss:// to a server with a private (self-signed)
// certificate: the server gets --cert/--key through its environment
// fallbacks; parlance trusts the certificate the standard way for Go
// programs on Linux, SSL_CERT_FILE, with no option of its own. Two
// clients find each other through the server and chat both ways. A
// client without SSL_CERT_FILE does not trust the server and says why.
func TestRealInternetTLS(t *testing.T) {
	s := newScene(t)
	certFile, keyFile := writeSelfSigned(t, t.TempDir())
	sv := s.startServer(0, "PARLANCE_BOOTSTRAP_CERT="+certFile, "PARLANCE_BOOTSTRAP_KEY="+keyFile)
	sv.WaitErrLine(0, re(`.*"url":"wss://%s"`, q(sv.addr)), wait)
	url := "wss://" + sv.addr

	trust := []string{"SSL_CERT_FILE=" + certFile}
	startTLS := func(nick string) *peer {
		t.Helper()
		p := s.startPeerEnv(nick, trust, "--mode", "internet", "--bootstrap-server", url)
		p.WaitLine(0, re(`\* registered with %s as 127\.0\.0\.1:%d`, q(url), p.port), wait)
		return p
	}
	alice := startTLS("alice")
	bob := startTLS("bob")
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")
	chat(alice, bob, "hi bob, over wss")
	chat(bob, alice, "hi alice, private CA and all")
	alice.wantPeers("bob")

	// Without SSL_CERT_FILE the certificate is unknown: the client
	// keeps retrying and reports the verification failure.
	mallory := s.startPeerEnv("mallory", []string{"SSL_CERT_FILE=" + filepath.Join(t.TempDir(), "none.pem")},
		"--mode", "internet", "--bootstrap-server", url)
	mallory.WaitLine(0, re(`\* lost the bootstrap server %s.*certificate signed by unknown authority`, q(url)), wait)
	mallory.quit()
	alice.wantPeers("bob")

	mb := bob.Mark()
	alice.quit()
	bob.waitLeft(mb, "alice")
	bob.quit()
	alive(t, sv.Process)
	noTerminalControls(t, alice, bob)
}
