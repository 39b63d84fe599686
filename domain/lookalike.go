package domain

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/runenames"
)

// Char is one character of a display name, described so that a moderator
// can tell two look-alike names apart: "А" is U+0410 CYRILLIC CAPITAL
// LETTER A, of the Cyrillic script, where "A" is U+0041 of the Latin one.
type Char struct {
	// Index is the character's place in the name, counting from 0 in runes.
	Index int `json:"index"`
	// Char is the character itself.
	Char string `json:"char"`
	// CodePoint is its code point as Unicode writes it, e.g. "U+0410".
	CodePoint string `json:"code_point"`
	// Name is its Unicode name, e.g. "CYRILLIC CAPITAL LETTER A".
	Name string `json:"name"`
	// Script is its Unicode script, e.g. "Cyrillic", "Latin", "Common".
	Script string `json:"script"`
	// Invisible is set for characters that take no space on screen
	// (format characters such as U+200B ZERO WIDTH SPACE).
	Invisible bool `json:"invisible,omitempty"`
}

// NameDifference says how two names differ, character by character.
type NameDifference struct {
	// Identical is true when the names are the same once case-folded:
	// nothing but letter case (or Unicode compatibility forms) tells them apart.
	Identical bool
	// Confusable is true when they share a confusable skeleton.
	Confusable bool
	// A and B are the characters of each name that have no equal (ignoring
	// case) at the matching place in the other, in name order.
	A, B []Char
}

// Relation puts the names' likeness in words: "identical", "confusable"
// or "different".
func (d NameDifference) Relation() string {
	switch {
	case d.Identical:
		return "identical"
	case d.Confusable:
		return "confusable"
	}
	return "different"
}

// CompareNames finds the characters that tell name a from name b. The names
// are aligned on their longest common subsequence of characters (equal when
// equal ignoring case), so an inserted invisible character or one swapped
// letter is marked alone. Names are at most a few hundred characters, so
// the quadratic alignment is cheap.
func CompareNames(a, b string) NameDifference {
	ra, rb := []rune(a), []rune(b)
	d := NameDifference{Identical: FoldName(a) == FoldName(b), Confusable: NameSkeleton(a) == NameSkeleton(b)}
	// lcs[i][j] is the common subsequence length of ra[i:] and rb[j:].
	lcs := make([][]int, len(ra)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(rb)+1)
	}
	for i := len(ra) - 1; i >= 0; i-- {
		for j := len(rb) - 1; j >= 0; j-- {
			if sameLetter(ra[i], rb[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(ra) || j < len(rb) {
		switch {
		case i < len(ra) && j < len(rb) && sameLetter(ra[i], rb[j]):
			i, j = i+1, j+1
		case j == len(rb) || (i < len(ra) && lcs[i+1][j] >= lcs[i][j+1]):
			d.A = append(d.A, DescribeChar(i, ra[i]))
			i++
		default:
			d.B = append(d.B, DescribeChar(j, rb[j]))
			j++
		}
	}
	return d
}

func sameLetter(a, b rune) bool {
	return a == b || strings.EqualFold(string(a), string(b))
}

// DescribeChar describes the character r found at index of a name.
func DescribeChar(index int, r rune) Char {
	name := runenames.Name(r)
	if name == "" {
		name = "unnamed character"
	}
	return Char{Index: index, Char: string(r), CodePoint: fmt.Sprintf("U+%04X", r), Name: name,
		Script: ScriptOf(r), Invisible: unicode.Is(unicode.Cf, r)}
}

// scriptNames lists Go's script tables in a fixed order so that lookups
// are deterministic.
var scriptNames = func() []string {
	names := make([]string, 0, len(unicode.Scripts))
	for n := range unicode.Scripts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}()

// ScriptOf returns the Unicode script of r ("Latin", "Cyrillic", "Greek",
// "Common" for digits, punctuation and spaces, "Inherited" for combining
// marks), or "Unknown".
func ScriptOf(r rune) string {
	for _, n := range scriptNames {
		if unicode.Is(unicode.Scripts[n], r) {
			return n
		}
	}
	return "Unknown"
}

// Scripts returns the scripts of a name's letters, Common and Inherited
// left out, in order of first use: more than one is a sign of a spoof
// ("Аlice" mixes Cyrillic and Latin).
func Scripts(name string) []string {
	var out []string
	for _, r := range name {
		s := ScriptOf(r)
		if s == "Common" || s == "Inherited" || s == "Unknown" {
			continue
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
