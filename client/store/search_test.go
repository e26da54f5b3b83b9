package store

import (
	"fmt"
	"reflect"
	"testing"
)

func TestSearch(t *testing.T) {
	kinds(t, func(t *testing.T, s *Store) {
		texts := []string{
			"hello world",
			"Hello again, WORLD",
			"héllo wörld with accents",
			"unrelated words",
			`she said "hi" (twice) AND left`,
			"prefixes: carpet carpool",
			"col:umn -minus +plus NEAR(a b) ^caret {braces} *star",
		}
		for i, text := range texts {
			if i%2 == 0 {
				mustAddOut(t, s, out("K", "k", text))
			} else {
				mustAddIn(t, s, in("K", "k", fmt.Sprint(i), text))
			}
		}
		tests := []struct {
			query string
			want  []int // indexes into texts, newest first
		}{
			{"hello", []int{2, 1, 0}},
			{"WORLD hello", []int{2, 1, 0}},
			{"wörld", []int{2, 1, 0}},
			{"carp*", []int{5}},
			{"car*", []int{6, 5}},
			{"carp", nil},
			{"carpool*", []int{5}},
			{`"hi"`, []int{4}},
			{"(twice)", []int{4}},
			{"AND", []int{4}},
			{"said AND hi", []int{4}},
			{"NEAR(a b)", []int{6}},
			{"col:umn", []int{6}},
			{"-minus", []int{6}},
			{"^caret", []int{6}},
			{"{braces}", []int{6}},
			{"hello nothing", nil},
		}
		for _, tt := range tests {
			got, err := s.Search(t.Context(), tt.query, 0)
			if err != nil {
				t.Errorf("Search(%q): %v", tt.query, err)
				continue
			}
			var idx []int
			for _, m := range got {
				for i, text := range texts {
					if m.Text == text {
						idx = append(idx, i)
					}
				}
			}
			if !reflect.DeepEqual(idx, tt.want) {
				t.Errorf("Search(%q) = %v, want %v", tt.query, idx, tt.want)
			}
		}
		if got, err := s.Search(t.Context(), "hello", 1); err != nil || len(got) != 1 || got[0].Text != texts[2] {
			t.Errorf("Search with limit 1 = %v, %v; want only the newest", got, err)
		}
	})
}

func TestSearchNeverFailsOnSyntax(t *testing.T) {
	s := openMem(t)
	mustAddOut(t, s, out("K", "k", "some text to search"))
	for _, q := range []string{
		`"`, `""`, `"unbalanced`, `(`, `)`, `()`, `AND`, `OR`, `NOT`, `a OR`, `NOT a`, `NEAR`, `NEAR(`,
		`NEAR(a b, 2)`, `*`, `**`, `*a`, `a**`, `-`, `-x`, `:`, `text:some`, `text : some`, `^`, `^some`, `+`, `{`, `}`,
		`{text}: some`, `a*b`, `'`, `\`, `some" OR "x`, "tab\there", "\x00", `"some"*`, `😀`, `:-)`, `c++`, `a.b`,
	} {
		if _, err := s.Search(t.Context(), q, 10); err != nil {
			t.Errorf("Search(%q): %v", q, err)
		}
	}
	for _, q := range []string{"", "   ", "\t\n"} {
		if _, err := s.Search(t.Context(), q, 10); err == nil {
			t.Errorf("Search(%q) is not an error", q)
		}
	}
}

func TestSearchIndexesFirst(t *testing.T) {
	s, _ := openTemp(t)
	mustAddOut(t, s, out("K", "k", "first penguin"))
	if err := s.IndexSearch(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustAddIn(t, s, in("K", "k", "1", "second penguin"))
	got, err := s.Search(t.Context(), "penguin", 0)
	if err != nil || len(got) != 2 || got[0].Text != "second penguin" {
		t.Fatalf("Search after a later store = %v, %v; want both, newest first", got, err)
	}
}

func TestIndexSearchInChunks(t *testing.T) {
	s := openMem(t)
	const n = indexChunk*2 + 10
	batch := make([]*Message, 0, 1000)
	for i := range n {
		batch = append(batch, in("K", "k", fmt.Sprint(i), fmt.Sprintf("walrus number w%d", i)))
		if len(batch) == cap(batch) || i == n-1 {
			s.AddIncoming(batch, nil)
			batch = make([]*Message, 0, 1000)
		}
	}
	before := s.commits()
	if err := s.IndexSearch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if chunks := s.commits() - before; chunks < 3 {
		t.Errorf("indexed %d messages in %d transactions, want at least 3 of %d", n, chunks, indexChunk)
	}
	for _, w := range []string{"w0", fmt.Sprint("w", indexChunk), fmt.Sprint("w", n-1)} {
		if got, err := s.Search(t.Context(), w, 0); err != nil || len(got) != 1 {
			t.Errorf("Search(%q) = %d results, %v", w, len(got), err)
		}
	}
	if got, err := s.Search(t.Context(), "walrus", 5); err != nil || len(got) != 5 || got[0].Text != fmt.Sprintf("walrus number w%d", n-1) {
		t.Errorf("Search(walrus, 5) = %d results, %v", len(got), err)
	}
}
