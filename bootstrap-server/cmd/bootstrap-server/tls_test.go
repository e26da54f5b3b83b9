package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// selfSigned writes a self-signed ECDSA certificate for 127.0.0.1 and
// localhost, and its key, as PEM into dir. It returns their paths and a
// pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "parlance test server"},
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
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestRealProcessTLS runs the binary with --cert/--key inside the private
// network namespace: a client trusting the certificate registers, lists
// peers and gets close 1001 on SIGTERM; the process exits 0 at once. A
// plain ws:// client and a wss:// client that does not trust the
// certificate fail, each with an error that says why.
func TestRealProcessTLS(t *testing.T) {
	netns.Require(t)
	ctx := t.Context()
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	cmd, addr := startServer(t, buildServer(t), nil, "--cert", certFile, "--key", keyFile)

	// Plain ws:// to the TLS port: Go's server answers 400.
	_, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/", nil)
	if err == nil {
		t.Fatal("ws:// to the TLS server connected")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("ws:// to the TLS server: %v, response %+v, want 400", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "HTTPS server") {
		t.Fatalf("ws:// to the TLS server: body %q, want it to say the server speaks HTTPS", body)
	}

	// wss:// without trusting the certificate: refused by the client.
	_, _, err = websocket.DefaultDialer.DialContext(ctx, "wss://"+addr+"/", nil)
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("wss:// with system roots only: %v, want a certificate verification error", err)
	}

	// Trusting it, by address and by name.
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	_, port, _ := net.SplitHostPort(addr)
	byName, _, err := d.DialContext(ctx, "wss://localhost:"+port+"/", nil)
	if err != nil {
		t.Fatalf("wss://localhost: %v", err)
	}
	defer byName.Close()
	ws, _, err := d.DialContext(ctx, "wss://"+addr+"/", nil)
	if err != nil {
		t.Fatalf("wss://%s: %v", addr, err)
	}
	defer ws.Close()
	if st := ws.NetConn().(*tls.Conn).ConnectionState(); st.Version < tls.VersionTLS12 {
		t.Fatalf("TLS version %x, want 1.2 or later", st.Version)
	}
	send(t, ws, &protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:40045"})
	if r, ok := recv(t, ws).(*protocol.Registered); !ok || r.PublicAddr != "127.0.0.1:40045" {
		t.Fatalf("registered: %+v", r)
	}
	send(t, ws, &protocol.ListPeers{})
	if l, ok := recv(t, ws).(*protocol.PeerList); !ok || len(l.Peers) != 1 || l.Peers[0].Nickname != "alice" {
		t.Fatalf("peer_list: %+v", l)
	}

	// HTTPS for the plain endpoints too.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	hr, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	hc.CloseIdleConnections()
	if hr.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz over TLS: %s", hr.Status)
	}

	sigterm(t, cmd, ws, byName)
}
