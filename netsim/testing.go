package netsim

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
)

// SeedEnv names the environment variable that fixes the seed of Test.
const SeedEnv = "NETSIM_SEED"

// TraceEnv names the environment variable that, set to a file name, makes
// Test and Run write the trace there (when Options.Trace is not set).
const TraceEnv = "NETSIM_TRACE"

// SeedFromEnv returns the seed in $NETSIM_SEED, or else one derived from the
// test's name, so that every test has its own fixed seed.
func SeedFromEnv(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv(SeedEnv); s != "" {
		seed, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("netsim: %s=%q is not an unsigned integer", SeedEnv, s)
		}
		return seed
	}
	h := fnv.New64a()
	io.WriteString(h, t.Name())
	return h.Sum64()
}

// ReplayCommand returns the shell command that reruns test t with seed.
func ReplayCommand(t testing.TB, seed uint64) string {
	var parts []string
	for p := range strings.SplitSeq(t.Name(), "/") {
		parts = append(parts, "^"+regexp.QuoteMeta(p)+"$")
	}
	dir, _ := os.Getwd()
	return fmt.Sprintf("cd %s && %s=%d go test -run '%s' .", dir, SeedEnv, seed, strings.Join(parts, "/"))
}

// Test runs body inside a synctest bubble with a fresh Network seeded by
// SeedFromEnv(t), and closes the network when body returns (so every host
// goroutine must have stopped by then, or synctest reports it). If the test
// fails, Test logs the command that replays it. opts may be omitted.
func Test(t *testing.T, body func(t *testing.T, n *Network), opts ...Options) {
	t.Helper()
	seed := SeedFromEnv(t)
	Run(t, seed, optsOf(opts), body)
}

func optsOf(opts []Options) *Options {
	if len(opts) == 0 {
		return nil
	}
	return &opts[0]
}

// Run is Test with an explicit seed and options; it returns the trace hash
// of the run.
func Run(t *testing.T, seed uint64, opts *Options, body func(t *testing.T, n *Network)) (traceHash string) {
	t.Helper()
	if path := os.Getenv(TraceEnv); path != "" && (opts == nil || opts.Trace == nil) {
		f, err := os.Create(path)
		if err != nil {
			t.Fatalf("netsim: %s: %v", TraceEnv, err)
		}
		defer f.Close()
		o := Options{}
		if opts != nil {
			o = *opts
		}
		o.Trace = bufio.NewWriter(f)
		defer o.Trace.(*bufio.Writer).Flush()
		opts = &o
	}
	synctest.Test(t, func(t *testing.T) {
		n := New(seed, opts)
		defer func() {
			n.Close()
			traceHash = n.TraceHash()
		}()
		body(t, n)
	})
	if t.Failed() {
		t.Logf("netsim: seed %d; replay with: %s (add %s=FILE for the trace)", seed, ReplayCommand(t, seed), TraceEnv)
	}
	return traceHash
}

// CheckDeterminism runs body twice with the same seed and fails t if the
// two traces differ, naming the first line where they do. opts may be
// omitted; its Trace field is ignored.
func CheckDeterminism(t *testing.T, seed uint64, body func(t *testing.T, n *Network), opts ...Options) {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	var traces [2]bytes.Buffer
	var hashes [2]string
	for i := range 2 {
		o.Trace = &traces[i]
		hashes[i] = Run(t, seed, &o, body)
	}
	if hashes[0] == hashes[1] {
		return
	}
	a := bufio.NewScanner(&traces[0])
	b := bufio.NewScanner(&traces[1])
	a.Buffer(nil, 1<<20)
	b.Buffer(nil, 1<<20)
	for line := 1; ; line++ {
		okA, okB := a.Scan(), b.Scan()
		if !okA && !okB {
			break
		}
		if a.Text() != b.Text() || okA != okB {
			t.Errorf("netsim: seed %d is not deterministic: trace hashes %s and %s differ first at line %d:\n  run 1: %s\n  run 2: %s\nreplay with: %s",
				seed, hashes[0][:12], hashes[1][:12], line, a.Text(), b.Text(), ReplayCommand(t, seed))
			return
		}
	}
	t.Errorf("netsim: seed %d is not deterministic: trace hashes %s and %s differ", seed, hashes[0], hashes[1])
}
