package domain

import (
	"testing"
)

func TestCompareNamesMarksTheCharactersThatDiffer(t *testing.T) {
	type mark struct {
		side      string
		index     int
		codePoint string
		script    string
	}
	for _, tc := range []struct {
		name, a, b string
		relation   string
		marks      []mark
	}{
		{"Cyrillic capital A", "Alice Final", "\u0410lice Final", "confusable",
			[]mark{{"a", 0, "U+0041", "Latin"}, {"b", 0, "U+0410", "Cyrillic"}}},
		{"Greek omicron in the middle", "Bob Moderator", "Bob M\u03bfderator", "confusable",
			[]mark{{"a", 5, "U+006F", "Latin"}, {"b", 5, "U+03BF", "Greek"}}},
		{"zero-width space inserted", "admin", "adm\u200bin", "confusable",
			[]mark{{"b", 3, "U+200B", "Common"}}},
		{"case only", "ALICE", "alice", "identical", nil},
		{"same name", "Alice", "Alice", "identical", nil},
		{"unrelated", "Alice", "Bob", "different",
			[]mark{{"a", 0, "U+0041", "Latin"}, {"a", 1, "U+006C", "Latin"}, {"a", 2, "U+0069", "Latin"}, {"a", 3, "U+0063", "Latin"}, {"a", 4, "U+0065", "Latin"},
				{"b", 0, "U+0042", "Latin"}, {"b", 1, "U+006F", "Latin"}, {"b", 2, "U+0062", "Latin"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := CompareNames(tc.a, tc.b)
			if got := d.Relation(); got != tc.relation {
				t.Errorf("relation %q, want %q", got, tc.relation)
			}
			var got []mark
			for _, c := range d.A {
				got = append(got, mark{"a", c.Index, c.CodePoint, c.Script})
			}
			for _, c := range d.B {
				got = append(got, mark{"b", c.Index, c.CodePoint, c.Script})
			}
			if len(got) != len(tc.marks) {
				t.Fatalf("marks %v, want %v", got, tc.marks)
			}
			for i := range got {
				if got[i] != tc.marks[i] {
					t.Errorf("mark %d: %v, want %v", i, got[i], tc.marks[i])
				}
			}
		})
	}
}

func TestDescribeChar(t *testing.T) {
	c := DescribeChar(2, '\u0410')
	if c.Name != "CYRILLIC CAPITAL LETTER A" || c.Script != "Cyrillic" || c.CodePoint != "U+0410" || c.Index != 2 || c.Invisible {
		t.Errorf("Cyrillic A: %+v", c)
	}
	if z := DescribeChar(0, '\u200b'); !z.Invisible || z.Name != "ZERO WIDTH SPACE" {
		t.Errorf("zero-width space: %+v", z)
	}
	if s := Scripts("\u0410lice 1"); len(s) != 2 || s[0] != "Cyrillic" || s[1] != "Latin" {
		t.Errorf("scripts of a mixed name: %v", s)
	}
}

func TestLookalikesCompareEachMemberWithTheFirst(t *testing.T) {
	alerts := Lookalikes([]NamedMember{
		{User: "@eve:x", DisplayName: "\u0410lice"},
		{User: "@alice:x", DisplayName: "Alice", Moderator: true},
	})
	if len(alerts) != 1 || len(alerts[0].Differences) != 2 {
		t.Fatalf("alerts: %+v", alerts)
	}
	a := alerts[0]
	if a.Members[0].User != "@alice:x" || a.Identical {
		t.Errorf("moderator first, confusable: %+v", a)
	}
	d := a.Differences[1]
	if len(d.A) != 1 || d.A[0].Script != "Latin" || len(d.B) != 1 || d.B[0].Script != "Cyrillic" {
		t.Errorf("difference: %+v", d)
	}
}
