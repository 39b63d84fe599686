package http

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/profilestore/profilestore/projections"
)

// activityChart draws changes per day as an SVG bar chart, server-side, so
// it needs no script. Profile and room changes stack; the chart carries a
// title and a description for screen readers, and every bar a tooltip.
// Only numbers and dates go into the markup.
func activityChart(days []projections.DayCount) template.HTML {
	const width, height, left, bottom, top = 720, 220, 40, 30, 10
	max := 1
	for _, d := range days {
		max = maxInt(max, d.ProfileChanges+d.RoomChanges)
	}
	n := maxInt(len(days), 1)
	slot := float64(width-left) / float64(n)
	bar := slot * 0.8
	scale := float64(height-top-bottom) / float64(max)
	var b strings.Builder
	total := 0
	for _, d := range days {
		total += d.ProfileChanges + d.RoomChanges
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="chart-title chart-desc" viewBox="0 0 %d %d" width="%d" height="%d">`, width, height, width, height)
	fmt.Fprintf(&b, `<title id="chart-title">Changes per day</title><desc id="chart-desc">%d changes over %d days; the highest day had %d.</desc>`, total, len(days), max)
	base := float64(height - bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="#555"/>`, left, base, width, base)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%d</text><text x="%d" y="%.0f" text-anchor="end">0</text>`, left-4, top+8, max, left-4, base)
	for i, d := range days {
		x := float64(left) + float64(i)*slot + (slot-bar)/2
		hp := float64(d.ProfileChanges) * scale
		hr := float64(d.RoomChanges) * scale
		label := fmt.Sprintf("%s: %d profile, %d room changes, %d renames", d.Day.Format("2006-01-02"), d.ProfileChanges, d.RoomChanges, d.Renames)
		fmt.Fprintf(&b, `<g><title>%s</title>`, label)
		fmt.Fprintf(&b, `<rect class="profile" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#0d3b66"/>`, x, base-hp, bar, hp)
		fmt.Fprintf(&b, `<rect class="room" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f4a261"/></g>`, x, base-hp-hr, bar, hr)
		// A weekly tick, and the last day unless a tick is too close to it.
		if i%7 == 0 && len(days)-1-i >= 3 || i == len(days)-1 {
			anchor, lx := "middle", x+bar/2
			if i == len(days)-1 {
				anchor, lx = "end", x+bar // keep the last label inside the picture
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="%s">%s</text>`, lx, height-10, anchor, d.Day.Format("Jan 2"))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="#0d3b66"/><text x="%d" y="%d">profile</text>`, width-150, top, width-136, top+9)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="#f4a261"/><text x="%d" y="%d">room</text>`, width-80, top, width-66, top+9)
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built from numbers and formatted dates only
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
