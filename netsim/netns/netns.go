// Package netns guards tests that use real sockets: they may run only inside
// a private network namespace, so that no test traffic, and above all no
// multicast, ever reaches a real interface of the machine.
//
// The project's test command (scripts/test) runs `go test` inside
// `unshare -n` with only a loopback interface, multicast routed on it, and
// sets PARLANCE_NETNS=1. A test calls Require first: outside such a
// namespace it is skipped with a message saying why, unless PARLANCE_NETNS=1
// says it must run, in which case the wrong environment fails it.
package netns

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// OwnPrefix starts the name of every interface the project's tests create
// (veth pairs between namespaces). Interfaces so named count as ours.
const OwnPrefix = "pl"

// EnvVar is set to "1" by the test command inside a private namespace.
const EnvVar = "PARLANCE_NETNS"

// Check returns nil when every network interface visible to the process is
// the loopback interface or one the project's tests created, that is, when
// the process runs in a private network namespace. Otherwise it names the
// foreign interfaces.
func Check() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("netns: list interfaces: %w", err)
	}
	var foreign []string
	for _, ifi := range ifs {
		if ifi.Name == "lo" || strings.HasPrefix(ifi.Name, OwnPrefix) {
			continue
		}
		foreign = append(foreign, ifi.Name)
	}
	if len(foreign) > 0 {
		return fmt.Errorf("netns: not a private network namespace: interfaces %s are not ours", strings.Join(foreign, ", "))
	}
	return nil
}

// Require skips t unless it runs in a private network namespace, or fails it
// when the test command said it would (PARLANCE_NETNS=1) and it does not.
func Require(t testing.TB) {
	t.Helper()
	err := Check()
	if err == nil {
		return
	}
	if os.Getenv(EnvVar) == "1" {
		t.Fatalf("%v (PARLANCE_NETNS=1 promised a private namespace)", err)
	}
	t.Skipf("SKIPPED real-socket test: %v; run it through scripts/test as root, which uses unshare -n", err)
}
