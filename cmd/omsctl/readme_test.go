package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// Every omsctl line of the README's walkthrough is a valid invocation:
// its command exists, and its flags and arguments parse and suffice.
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(readme), "\n") {
		line = strings.TrimPrefix(line, "source <(")
		if !strings.HasPrefix(line, "bin/omsctl ") {
			continue
		}
		n++
		args := shellWords(t, line)[1:]
		a := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{}, func(string) string { return "" })
		root := a.root()
		root.InitDefaultCompletionCmd()
		c, rest, err := root.Find(args)
		if err == nil {
			err = c.ParseFlags(rest)
		}
		if err == nil {
			err = c.ValidateRequiredFlags()
		}
		if err == nil && c.Args != nil {
			err = c.Args(c, c.Flags().Args())
		}
		if err == nil {
			err = a.resolve(c)
		}
		if err != nil {
			t.Errorf("README: %s: %v", line, err)
		}
	}
	if n < 5 {
		t.Errorf("README has %d omsctl examples, want the walkthrough's", n)
	}
}

// shellWords splits a README command line as sh would, enough for the
// examples: single quotes, and the line ending at a pipe, a comment or a
// closing parenthesis.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '|' || r == '#' || r == ')':
			if inWord {
				words = append(words, cur.String())
			}
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %s", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
