package alerts

import (
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
)

func stringValue(raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// Recorded is an alert as the outbox delivers it: the alert, the id of its
// event (stable across retries and restarts) and its place in the stream.
type Recorded struct {
	domain.Alert
	ID       string
	Revision uint64
	// Erased is set when a name in it could not be opened any more.
	Erased bool
}

// Payload is the JSON body of a webhook delivery (docs/ALERTS.md).
type Payload struct {
	ID          string         `json:"id"`
	Rule        string         `json:"rule"`
	RoomID      domain.RoomID  `json:"room_id,omitempty"`
	UserID      domain.UserID  `json:"user_id"`
	DisplayName string         `json:"displayname"`
	Scripts     []string       `json:"scripts"`
	Trigger     string         `json:"trigger_position"`
	TS          int64          `json:"origin_server_ts"`
	Others      []PayloadOther `json:"others,omitempty"`
	Moderator   bool           `json:"moderator,omitempty"`
	Protected   string         `json:"protected_name,omitempty"`
	Renames     int            `json:"renames,omitempty"`
	WindowMS    int64          `json:"window_ms,omitempty"`
	Erased      bool           `json:"erased,omitempty"`
	ConsoleURL  string         `json:"console_url,omitempty"`
	Summary     string         `json:"summary"`
}

// PayloadOther is a member whose name the alert's name looks like.
type PayloadOther struct {
	UserID      domain.UserID `json:"user_id"`
	DisplayName string        `json:"displayname"`
	Moderator   bool          `json:"moderator,omitempty"`
	// Relation is "identical" or "confusable".
	Relation string `json:"relation"`
	// Differs are the characters of the alert's name that this member's
	// name lacks at the same place; Theirs the other way round.
	Differs []domain.Char `json:"differs"`
	Theirs  []domain.Char `json:"theirs"`
}

// Notice renders alerts in words, with links to the console.
type Notice struct {
	// ConsoleURL is the console's public base URL, e.g.
	// https://profiles.example.com (no links when empty).
	ConsoleURL string
}

func (n Notice) link(path string) string {
	if n.ConsoleURL == "" {
		return ""
	}
	return strings.TrimRight(n.ConsoleURL, "/") + path
}

func (n Notice) alertLink(a Recorded) string {
	if a.Room != "" {
		return n.link("/console/rooms/" + url.PathEscape(string(a.Room)))
	}
	return n.link("/console/users/" + url.PathEscape(string(a.User)))
}

// Payload is the alert as a webhook receives it.
func (n Notice) Payload(a Recorded) Payload {
	p := Payload{ID: a.ID, Rule: a.Rule, RoomID: a.Room, UserID: a.User, DisplayName: a.Name, Scripts: domain.Scripts(a.Name),
		Trigger: a.Trigger.String(), TS: a.At.UnixMilli(), Moderator: a.Moderator, Protected: a.Protected,
		Renames: a.Renames, WindowMS: a.Window.Milliseconds(), Erased: a.Erased, ConsoleURL: n.alertLink(a)}
	if p.Scripts == nil {
		p.Scripts = []string{}
	}
	for i, d := range a.Differences() {
		o := a.Others[i]
		po := PayloadOther{UserID: o.User, DisplayName: o.DisplayName, Moderator: o.Moderator, Relation: d.Relation(), Differs: d.A, Theirs: d.B}
		if po.Differs == nil {
			po.Differs = []domain.Char{}
		}
		if po.Theirs == nil {
			po.Theirs = []domain.Char{}
		}
		p.Others = append(p.Others, po)
	}
	p.Summary, _ = n.Text(a)
	return p
}

// Text renders the alert as an m.notice's plain body and HTML formatted
// body: who, where, the names, the characters that differ with their code
// points and scripts, and a link to the console.
func (n Notice) Text(a Recorded) (plain, formatted string) {
	var pb, hb strings.Builder
	name, hname := quoted(a.Name, a.Erased), hquoted(a.Name, a.Erased)
	where, hwhere := "", ""
	if a.Room != "" {
		where, hwhere = " in "+string(a.Room), " in <code>"+html.EscapeString(string(a.Room))+"</code>"
	}
	user, huser := string(a.User), "<code>"+html.EscapeString(string(a.User))+"</code>"
	switch a.Rule {
	case domain.AlertLookalike:
		what := "Look-alike name"
		if a.Moderator {
			what = "Possible impersonation of a moderator"
		}
		fmt.Fprintf(&pb, "%s%s: %s took %s.", what, where, user, name)
		fmt.Fprintf(&hb, "<b>%s</b>%s: %s took %s.", what, hwhere, huser, hname)
		for i, d := range a.Differences() {
			o := a.Others[i]
			mod, hmod := "", ""
			if o.Moderator {
				mod, hmod = ", moderator", ", moderator"
			}
			fmt.Fprintf(&pb, "\n- %s to %s (%s%s)", d.Relation(), quoted(o.DisplayName, false), o.User, mod)
			fmt.Fprintf(&hb, "<br>• <b>%s</b> to %s (<code>%s</code>%s)", d.Relation(), hquoted(o.DisplayName, false), html.EscapeString(string(o.User)), hmod)
			if d.Identical {
				continue
			}
			for _, c := range d.A {
				fmt.Fprintf(&pb, "; character %d is %s", c.Index+1, charWords(c))
				fmt.Fprintf(&hb, "; character %d is %s", c.Index+1, html.EscapeString(charWords(c)))
			}
			for _, c := range d.B {
				fmt.Fprintf(&pb, "; theirs has %s at %d", charWords(c), c.Index+1)
				fmt.Fprintf(&hb, "; theirs has %s at %d", html.EscapeString(charWords(c)), c.Index+1)
			}
		}
	case domain.AlertProtectedName:
		fmt.Fprintf(&pb, "Protected name taken%s: %s took %s, confusable with the protected name %s.", where, user, name, quoted(a.Protected, false))
		fmt.Fprintf(&hb, "<b>Protected name taken</b>%s: %s took %s, confusable with the protected name %s.", hwhere, huser, hname, hquoted(a.Protected, false))
		if d := domain.CompareNames(a.Name, a.Protected); !d.Identical && !a.Erased {
			for _, c := range d.A {
				fmt.Fprintf(&pb, " Character %d is %s.", c.Index+1, charWords(c))
				fmt.Fprintf(&hb, " Character %d is %s.", c.Index+1, html.EscapeString(charWords(c)))
			}
		}
	case domain.AlertRenameBurst:
		fmt.Fprintf(&pb, "Rename burst: %s renamed %d times within %s, last to %s%s.", user, a.Renames, a.Window, name, where)
		fmt.Fprintf(&hb, "<b>Rename burst</b>: %s renamed %d times within %s, last to %s%s.", huser, a.Renames, a.Window, hname, hwhere)
	default:
		fmt.Fprintf(&pb, "Alert %s%s about %s.", a.Rule, where, user)
		fmt.Fprintf(&hb, "Alert %s%s about %s.", html.EscapeString(a.Rule), hwhere, huser)
	}
	if s := domain.Scripts(a.Name); len(s) > 1 {
		fmt.Fprintf(&pb, "\nThe name mixes scripts: %s.", strings.Join(s, ", "))
		fmt.Fprintf(&hb, "<br>The name mixes scripts: %s.", html.EscapeString(strings.Join(s, ", ")))
	}
	fmt.Fprintf(&pb, "\nAt %s UTC.", a.At.UTC().Format(time.DateTime))
	fmt.Fprintf(&hb, "<br>At %s UTC.", a.At.UTC().Format(time.DateTime))
	if l := n.alertLink(a); l != "" {
		fmt.Fprintf(&pb, " Review: %s", l)
		fmt.Fprintf(&hb, ` <a href="%s">Review in the console</a>`, html.EscapeString(l))
	}
	return pb.String(), hb.String()
}

// charWords describes a character: “А” U+0410 CYRILLIC CAPITAL LETTER A (Cyrillic).
func charWords(c domain.Char) string {
	shown := "“" + c.Char + "”"
	if c.Invisible {
		shown = "an invisible character"
	}
	return fmt.Sprintf("%s %s %s (%s)", shown, c.CodePoint, c.Name, c.Script)
}

func quoted(name string, erased bool) string {
	if erased && name == "" {
		return "a name since erased"
	}
	return "“" + name + "”"
}

func hquoted(name string, erased bool) string {
	return html.EscapeString(quoted(name, erased))
}
