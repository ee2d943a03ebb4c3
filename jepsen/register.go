package jepsen

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// registerIn is the porcupine input of one register operation.
type registerIn struct {
	kind     Kind
	key      string
	value    string
	expected string
}

// registerOut is its output.
type registerOut struct {
	read     string
	found    bool
	unknown  bool // the operation may or may not have taken effect
	conflict bool // cas: refused because the expectation did not hold
}

// absent is the register state of a key that does not exist.
const absent = "\x00absent"

// RegisterModel is a linearizable read/write/CAS register per key.
// Operations of unknown outcome may or may not have taken effect, which is
// why the model is nondeterministic.
func RegisterModel() porcupine.Model {
	return (&porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range history {
				k := op.Input.(registerIn).key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			sort.Strings(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() []any { return []any{absent} },
		Step: func(state, input, output any) []any {
			st, in, out := state.(string), input.(registerIn), output.(registerOut)
			switch in.kind {
			case Read:
				v := absent
				if out.found {
					v = out.read
				}
				if v == st {
					return []any{st}
				}
				return nil
			case Write:
				if out.unknown {
					return []any{in.value, st}
				}
				return []any{in.value}
			case CAS:
				match := st == in.expected
				switch {
				case out.unknown && match:
					return []any{in.value, st}
				case out.unknown:
					return []any{st}
				case out.conflict && !match:
					return []any{st}
				case !out.conflict && match:
					return []any{in.value}
				}
				return nil
			}
			return nil
		},
		Equal: func(a, b any) bool { return a == b },
		DescribeOperation: func(input, output any) string {
			in, out := input.(registerIn), output.(registerOut)
			suffix := ""
			if out.unknown {
				suffix = " (unknown)"
			}
			switch in.kind {
			case Read:
				if !out.found {
					return "read() -> absent"
				}
				return fmt.Sprintf("read() -> %s", out.read)
			case Write:
				return fmt.Sprintf("write(%s)%s", in.value, suffix)
			default:
				if out.conflict {
					return fmt.Sprintf("cas(%s -> %s) refused", in.expected, in.value)
				}
				return fmt.Sprintf("cas(%s -> %s)%s", in.expected, in.value, suffix)
			}
		},
		DescribeState: func(state any) string {
			if state.(string) == absent {
				return "absent"
			}
			return state.(string)
		},
	}).ToModel()
}

// RegisterResult is the verdict of the register checker.
type RegisterResult struct {
	Result  porcupine.CheckResult
	Checked int // operations given to porcupine
	Dropped int // failed reads and definitely-failed writes (no effect)
	Unknown int // operations of unknown outcome
	Info    porcupine.LinearizationInfo
}

// Linearizable reports whether porcupine proved the history linearizable.
// Unknown (timed out) is not a pass.
func (r RegisterResult) Linearizable() bool { return r.Result == porcupine.Ok }

// CheckRegister checks a register history with porcupine, per key.
func CheckRegister(ops []Op, timeout time.Duration) RegisterResult {
	var res RegisterResult
	var hist []porcupine.Operation
	for _, o := range ops {
		in := registerIn{kind: o.Kind, key: o.Key, value: o.Value, expected: o.Expected}
		if o.Kind == CAS && o.Expected == "" {
			in.expected = absent
		}
		out := registerOut{read: o.Read, found: o.Found}
		ret := o.Return
		switch {
		case o.Outcome == OK:
		case o.Outcome == Fail && o.Kind == CAS && o.Conflict:
			out.conflict = true
		case o.Outcome == Fail, o.Kind == Read:
			// A failed or unknown read has no effect on the state.
			res.Dropped++
			continue
		case o.Outcome == Unknown:
			// It may take effect at any time after its invocation.
			out.unknown = true
			ret = math.MaxInt64
			res.Unknown++
		}
		hist = append(hist, porcupine.Operation{ClientId: o.Process, Input: in, Output: out, Call: o.Call, Return: ret})
	}
	res.Checked = len(hist)
	res.Result, res.Info = porcupine.CheckOperationsVerbose(RegisterModel(), hist, timeout)
	return res
}
