package rendezvous

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
	dto "github.com/prometheus/client_model/go"
)

func TestPlainHTTP(t *testing.T) {
	s, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name, path string
		status     int
		body       string
	}{
		{"a plain GET gets an explanation", "/", http.StatusUpgradeRequired, "WebSocket"},
		{"healthz", "/healthz", http.StatusOK, "ok"},
		{"metrics", "/metrics", http.StatusOK, "parlance_bootstrap_connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("GET %s: %d %q, want %d containing %q", tc.path, rec.Code, rec.Body, tc.status, tc.body)
			}
		})
	}
}

func TestListEncodingMatchesCodec(t *testing.T) {
	ns := &namespace{}
	var want protocol.PeerList
	for i, nick := range []string{"alice", "bob <&>", "ünï"} {
		info := protocol.PeerInfo{PeerID: string(rune('a' + i)), Nickname: nick, PublicAddr: "1.2.3.4:5", LocalAddr: "0.0.0.0:5", LastSeen: 1795739225}
		if i == 1 {
			info.Instance, info.Caps = "8c1d2e4f5a6b7c8d", []string{"push", "ack"}
		}
		want.Peers = append(want.Peers, info)
		ns.add(&peer{info: info, entry: encodeEntry(&info)})
	}
	wantB, err := protocol.EncodeServerMessage(&want)
	if err != nil {
		t.Fatal(err)
	}
	if got := ns.list(time.Now(), time.Second); string(got) != string(wantB) {
		t.Fatalf("cached list\n%s\nwant\n%s", got, wantB)
	}
	var empty namespace
	if got := empty.list(time.Now(), time.Second); string(got) != `{"type":"peer_list","peers":[]}` || string(emptyList) != string(got) {
		t.Fatalf("empty list %s", got)
	}
	var v map[string]any
	if err := json.Unmarshal(wantB, &v); err != nil {
		t.Fatal(err)
	}
}

func counter(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}
