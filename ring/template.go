package ring

import (
	"fmt"
	"strings"

	"github.com/capkv/capkv/internal/kverrors"
)

// segKind says how one template segment matches a key segment.
type segKind uint8

const (
	segLiteral   segKind = iota // must equal the key segment exactly
	segAttr                     // any non-empty segment, not used for placement
	segLocality                 // any non-empty segment; names the region
	segPartition                // any non-empty segment; hashed (or range-looked-up) to a partition
	segRest                     // "...": zero or more further non-empty segments
)

type segment struct {
	kind segKind
	text string // literal text, or attribute name
}

// Template is a parsed placement rule such as "accounts/{region}/{account}/...".
// It is immutable after ParseTemplate and safe for concurrent use.
type Template struct {
	src      string
	segs     []segment
	locality int // index into segs, -1 if none
	part     int // index into segs, -1 if none: the rest of the key is hashed
	rest     bool
}

// maxTemplateLen bounds the work done on an untrusted rule.
const maxTemplateLen = 1024

// ParseTemplate parses a placement rule; see the package documentation for the
// syntax. Errors wrap kverrors.ErrInvalidArgument and name the template, the
// segment position and what is wrong with it.
func ParseTemplate(s string) (*Template, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: template %q: %s", kverrors.ErrInvalidArgument, s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return nil, bad("empty template, want e.g. \"accounts/{region}/{account}/...\"")
	}
	if len(s) > maxTemplateLen {
		return nil, bad("%d bytes long, at most %d allowed", len(s), maxTemplateLen)
	}
	parts := strings.Split(s, "/")
	t := &Template{src: s, segs: make([]segment, 0, len(parts)), locality: -1, part: -1}
	explicitLocality, explicitPartition := -1, -1
	names := make(map[string]int, len(parts))
	for i, p := range parts {
		switch {
		case p == "":
			return nil, bad("segment %d is empty (leading, trailing or double '/')", i)
		case i == 0:
			if !validKeyspaceName(p) {
				return nil, bad("segment 0 %q must be the keyspace name, matching %s", p, keyspaceNameRule)
			}
			t.segs = append(t.segs, segment{kind: segLiteral, text: p})
		case p == "...":
			if i != len(parts)-1 {
				return nil, bad("segment %d: \"...\" is only allowed as the last segment", i)
			}
			t.rest = true
			t.segs = append(t.segs, segment{kind: segRest})
		case strings.HasPrefix(p, "{") || strings.HasSuffix(p, "}"):
			if len(p) < 2 || p[0] != '{' || p[len(p)-1] != '}' {
				return nil, bad("segment %d %q: an attribute must be written {name}, {name:locality} or {name:partition}", i, p)
			}
			name, kind, hasKind := strings.Cut(p[1:len(p)-1], ":")
			if !validAttrName(name) {
				return nil, bad("segment %d %q: attribute name %q must match [a-z][a-z0-9_]*", i, p, name)
			}
			if j, dup := names[name]; dup {
				return nil, bad("segment %d %q: attribute %q already used in segment %d", i, p, name, j)
			}
			names[name] = i
			seg := segment{kind: segAttr, text: name}
			switch {
			case !hasKind:
			case kind == "locality":
				if explicitLocality >= 0 {
					return nil, bad("segment %d %q: second locality attribute (segment %d is already one)", i, p, explicitLocality)
				}
				explicitLocality = i
				seg.kind = segLocality
			case kind == "partition":
				if explicitPartition >= 0 {
					return nil, bad("segment %d %q: second partition attribute (segment %d is already one)", i, p, explicitPartition)
				}
				explicitPartition = i
				seg.kind = segPartition
			default:
				return nil, bad("segment %d %q: unknown attribute kind %q, want locality or partition", i, p, kind)
			}
			t.segs = append(t.segs, seg)
		default:
			if strings.ContainsAny(p, "{}") {
				return nil, bad("segment %d %q: a literal must not contain '{' or '}'", i, p)
			}
			t.segs = append(t.segs, segment{kind: segLiteral, text: p})
		}
	}
	// {region} is the locality attribute by default, unless another attribute
	// is explicitly marked :locality (then region is an ordinary attribute).
	t.locality = explicitLocality
	if t.locality < 0 {
		if i, ok := names["region"]; ok && t.segs[i].kind == segAttr {
			t.segs[i].kind = segLocality
			t.locality = i
		}
	}
	// The partition attribute is the one marked :partition, else the first
	// attribute that is not the locality.
	t.part = explicitPartition
	if t.part < 0 {
		for i, seg := range t.segs {
			if seg.kind == segAttr {
				t.segs[i].kind = segPartition
				t.part = i
				break
			}
		}
	}
	return t, nil
}

// String returns the rule as it was written.
func (t *Template) String() string { return t.src }

// Keyspace returns the template's first segment: the keyspace it places.
func (t *Template) Keyspace() string { return t.segs[0].text }

// LocalityAttr returns the name of the locality attribute, or "" if none.
func (t *Template) LocalityAttr() string {
	if t.locality < 0 {
		return ""
	}
	return t.segs[t.locality].text
}

// PartitionAttr returns the name of the partition attribute, or "" if the whole
// rest of the key after the keyspace segment is hashed.
func (t *Template) PartitionAttr() string {
	if t.part < 0 {
		return ""
	}
	return t.segs[t.part].text
}

// Extract returns the key's locality value ("" if the template has none) and
// its partition key, both substrings of key. It does not allocate on success,
// because it runs on every request (via Ring.Locate).
func (t *Template) Extract(key string) (locality, partKey string, err error) {
	next := 0 // start of the next key segment; -1 once the key is exhausted
	for i, seg := range t.segs {
		if seg.kind == segRest {
			if next >= 0 {
				if err := checkSegments(key, next); err != nil {
					return "", "", t.mismatch(key, "%v", err)
				}
			}
			break
		}
		if next < 0 {
			return "", "", t.mismatch(key, "key has %d segment(s), template needs %s", countSegments(key), t.need())
		}
		var s string
		if j := strings.IndexByte(key[next:], '/'); j < 0 {
			s, next = key[next:], -1
		} else {
			s, next = key[next:next+j], next+j+1
		}
		if s == "" {
			return "", "", t.mismatch(key, "segment %d is empty", i)
		}
		switch seg.kind {
		case segLiteral:
			if s != seg.text {
				return "", "", t.mismatch(key, "segment %d is %q, want %q", i, s, seg.text)
			}
		case segLocality:
			locality = s
		case segPartition:
			partKey = s
		}
	}
	if !t.rest && next >= 0 {
		if next == len(key) {
			return "", "", t.mismatch(key, "trailing '/' (empty last segment)")
		}
		return "", "", t.mismatch(key, "key has %d segment(s), template needs %s", countSegments(key), t.need())
	}
	if t.part < 0 {
		// No partition attribute: hash everything after the keyspace segment.
		partKey = ""
		if j := strings.IndexByte(key, '/'); j >= 0 {
			partKey = key[j+1:]
		}
	}
	return locality, partKey, nil
}

// checkSegments reports an empty segment in key[from:], which starts a segment.
func checkSegments(key string, from int) error {
	start := from
	for i := from; i <= len(key); i++ {
		if i == len(key) || key[i] == '/' {
			if i == start {
				return fmt.Errorf("segment %d is empty", countSegments(key[:start])-1)
			}
			start = i + 1
		}
	}
	return nil
}

func countSegments(key string) int { return strings.Count(key, "/") + 1 }

func (t *Template) need() string {
	if t.rest {
		return fmt.Sprintf("at least %d", len(t.segs)-1)
	}
	return fmt.Sprintf("exactly %d", len(t.segs))
}

func (t *Template) mismatch(key, format string, args ...any) error {
	return fmt.Errorf("%w: key %q does not match template %q: %s",
		kverrors.ErrInvalidArgument, key, t.src, fmt.Sprintf(format, args...))
}

// SplitKeyspace returns the first segment of key: the name of its keyspace.
// It does not allocate on success.
func SplitKeyspace(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: empty key", kverrors.ErrInvalidArgument)
	}
	ks := key
	if j := strings.IndexByte(key, '/'); j >= 0 {
		ks = key[:j]
	}
	if ks == "" {
		return "", fmt.Errorf("%w: key %q starts with '/': its first segment must name a keyspace", kverrors.ErrInvalidArgument, key)
	}
	return ks, nil
}

const keyspaceNameRule = "[a-z][a-z0-9_-]* (at most 64 bytes)"

// validKeyspaceName keeps names safe to print in PartitionIDs, metrics and paths.
func validKeyspaceName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validAttrName(s string) bool {
	if len(s) == 0 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

const regionRule = "[A-Za-z0-9][A-Za-z0-9_.-]* (at most 64 bytes)"

// validRegion: region labels appear in keys and PartitionIDs, so they hold no
// '/' and are never "*" (which means "no region" in a PartitionID).
func validRegion(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !(c == '_' || c == '.' || c == '-')) {
			return false
		}
	}
	return true
}
