// Package consistency plants clock reads under another import name.
package consistency

import clk "time"

var wall = clk.Now

func Age(t clk.Time) clk.Duration { return clk.Since(t) }

// Unix builds a time from its parts: pure, allowed.
func Unix(n int64) clk.Time { return clk.Unix(0, n) }
