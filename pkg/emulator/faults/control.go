package faults

import (
	"fmt"
	"time"
)

// Command is one change to an injector as sent to the emulator's control API
// (JSON), so that out-of-process tests and scripts can inject faults.
type Command struct {
	// Action is "fail" (queue Rule), "latency", "unavailable", "random"
	// (install Random; a rate of 0 removes it) or "clear".
	Action string `json:"action"`
	// Random is the random faults of action "random".
	Random *Random `json:"random,omitempty"`
	// Rule fields, for "fail"; Kind also for "unavailable" (default ServiceUnavailable).
	Rule
	// Duration is a Go duration: the added latency for "latency", the length
	// of the outage for "unavailable".
	Duration string `json:"duration,omitempty"`
}

// Apply carries out a command.
func (i *Injector) Apply(c Command) error {
	var d time.Duration
	if c.Duration != "" {
		var err error
		if d, err = time.ParseDuration(c.Duration); err != nil {
			return fmt.Errorf("fault command: duration %q: %w", c.Duration, err)
		}
	}
	switch c.Action {
	case "fail":
		if c.Count == 0 {
			c.Count = 1
		}
		return i.FailNext(c.Rule)
	case "latency":
		i.SetLatency(d)
		return nil
	case "unavailable":
		if c.Kind == "" {
			c.Kind = ServiceUnavailable
		}
		return i.Unavailable(d, c.Kind)
	case "random":
		if c.Random == nil {
			return fmt.Errorf("fault command: action random needs a random object")
		}
		return i.SetRandom(*c.Random)
	case "clear":
		i.Clear()
		return nil
	}
	return fmt.Errorf("fault command: unknown action %q (want fail, latency, unavailable, random or clear)", c.Action)
}
