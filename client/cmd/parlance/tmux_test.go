package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim/netns"
)

// tmux drives one parlance on a real terminal: the user has half typed a
// line when a message arrives; the message appears above the prompt, the
// prompt and the typed text are visible again, and finishing the line
// sends it intact. Set PARLANCE_TMUX_DEMO=FILE to save the screen.
func TestTmuxMessageWhileTyping(t *testing.T) {
	netns.Require(t)
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("SKIPPED: tmux is not installed; the terminal UI is not tested")
	}
	bin := buildParlance(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "tmux.sock")
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	home := filepath.Join(dir, "alice")
	os.MkdirAll(home, 0o700)
	tm("new-session", "-d", "-x", "72", "-y", "12", "-s", "demo",
		"-e", "HOME="+home, "-e", "XDG_STATE_HOME="+filepath.Join(home, "state"), "-e", "XDG_CONFIG_HOME="+filepath.Join(home, "config"), "-e", "TERM=screen",
		bin+" -n alice --interface lo --log-file "+filepath.Join(home, "log"))
	t.Cleanup(func() { exec.Command(tmux, "-S", sock, "kill-server").Run() })
	capture := func() string { return tm("capture-pane", "-p", "-t", "demo") }
	waitScreen := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s := capture()
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("screen never showed %s:\n%s", what, s)
			}
			time.Sleep(20 * time.Millisecond) // polling the screen: tmux has no change notification
		}
	}

	bob := startProc(t, bin, dir, "bob")
	waitScreen("bob joining", func(s string) bool { return strings.Contains(s, "* bob joined") })
	bob.waitFor(0, "* alice joined")

	half := "/send bob this line was half typ"
	tm("send-keys", "-t", "demo", "-l", half)
	waitScreen("the half-typed line", func(s string) bool { return strings.Contains(s, "> "+half) })

	bob.send("/send alice a message arrives while alice types")
	screen := waitScreen("the message above the intact prompt line", func(s string) bool {
		lines := nonEmpty(s)
		return len(lines) >= 2 && strings.HasSuffix(lines[len(lines)-2], "bob: a message arrives while alice types") &&
			lines[len(lines)-1] == "> "+half
	})
	if p := os.Getenv("PARLANCE_TMUX_DEMO"); p != "" {
		if err := os.WriteFile(p, []byte(screen), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screen after the message:\n%s", screen)

	m := bob.mark()
	tm("send-keys", "-t", "demo", "-l", "ed, then finished")
	tm("send-keys", "-t", "demo", "Enter")
	bob.waitFor(m, "alice: this line was half typed, then finished")
	waitScreen("delivery", func(s string) bool { return strings.Contains(s, "Delivered to bob.") })
	tm("send-keys", "-t", "demo", "/quit", "Enter")
	bob.waitFor(m, "* alice left")
	bob.exit("")
}

func nonEmpty(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}
