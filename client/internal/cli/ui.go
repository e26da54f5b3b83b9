package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/peterh/liner"
)

// Prompter reads the user's lines. Prompt returns io.EOF at the end of
// input (Ctrl-D, closed pipe) and errInterrupted on Ctrl-C. Tests script it.
type Prompter interface {
	Prompt(prompt string) (string, error)
	Close() error
}

var errInterrupted = errors.New("interrupted")

// maxInputLine bounds one line read from a pipe.
const maxInputLine = 128 << 10

// linePrompter reads a pipe or file line by line, without prompt.
type linePrompter struct{ r *bufio.Reader }

func newLinePrompter(r io.Reader) *linePrompter {
	return &linePrompter{r: bufio.NewReaderSize(r, 4096)}
}

func (p *linePrompter) Prompt(string) (string, error) {
	var line []byte
	for {
		chunk, isPrefix, err := p.r.ReadLine()
		if err != nil {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return string(line), nil
			}
			return "", err
		}
		if len(line)+len(chunk) > maxInputLine {
			// Skip the rest of an over-long line and report it.
			for isPrefix && err == nil {
				_, isPrefix, err = p.r.ReadLine()
			}
			return "", fmt.Errorf("input line longer than %d bytes", maxInputLine)
		}
		line = append(line, chunk...)
		if !isPrefix {
			return string(line), nil
		}
	}
}

func (p *linePrompter) Close() error { return nil }

// linerPrompter is the interactive terminal: editing, history, completion.
type linerPrompter struct {
	st      *liner.State
	history string
}

func newLinerPrompter(history string, completer func(string) []string) *linerPrompter {
	st := liner.NewLiner()
	st.SetCtrlCAborts(true)
	st.SetTabCompletionStyle(liner.TabPrints)
	st.SetCompleter(completer)
	p := &linerPrompter{st: st, history: history}
	if history != "" {
		if f, err := os.Open(history); err == nil {
			_, _ = st.ReadHistory(f)
			f.Close()
		}
	}
	return p
}

func (p *linerPrompter) Prompt(prompt string) (string, error) {
	line, err := p.st.Prompt(prompt)
	switch {
	case errors.Is(err, liner.ErrPromptAborted):
		return "", errInterrupted
	case err != nil:
		return "", err
	}
	if line != "" {
		p.st.AppendHistory(historyEntry(line))
	}
	return line, nil
}

// Close saves the history and gives the terminal back.
func (p *linerPrompter) Close() error {
	var werr error
	if p.history != "" {
		if err := os.MkdirAll(filepath.Dir(p.history), 0o700); err == nil {
			if f, err := os.OpenFile(p.history, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
				_, werr = p.st.WriteHistory(f)
				if err := f.Close(); werr == nil {
					werr = err
				}
			} else {
				werr = err
			}
		}
	}
	return errors.Join(p.st.Close(), werr)
}

// screen serialises everything the chat prints. On a terminal with an
// active liner prompt, a line is printed above the prompt: clear the
// current line, print, then ask liner to redraw prompt and typed text by
// sending ourselves SIGWINCH (liner answers it with a full refresh). On a
// pipe it prints plain lines.
type screen struct {
	mu       sync.Mutex
	w        io.Writer
	terminal bool
	redraw   func() // sends SIGWINCH; nil when not a terminal
}

func newScreen(w io.Writer, terminal bool) *screen {
	s := &screen{w: w, terminal: terminal}
	if terminal {
		pid := os.Getpid()
		s.redraw = func() { _ = syscall.Kill(pid, syscall.SIGWINCH) }
	}
	return s
}

// Println prints one line (without trailing newline in s).
func (s *screen) Println(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminal {
		fmt.Fprintf(s.w, "\r\x1b[K%s\r\n", line)
		s.redraw()
		return
	}
	fmt.Fprintln(s.w, line)
}

// Print prints lines as a block (command output, while no prompt is
// active).
func (s *screen) Print(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminal {
		for _, line := range strings.Split(text, "\n") {
			fmt.Fprintf(s.w, "%s\r\n", line)
		}
		return
	}
	fmt.Fprintln(s.w, text)
}
