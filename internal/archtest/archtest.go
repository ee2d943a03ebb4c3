package archtest

import (
	"cmp"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Rule names a dependency rule (see the package documentation).
type Rule string

const (
	RuleBadgerOnlyInShard Rule = "badger-only-in-shard"
	RulePureCore          Rule = "pure-core"
)

// Violation is one place where a file breaks a rule.
type Violation struct {
	File string // slash-separated, relative to the checked root
	Line int
	Rule Rule
	Msg  string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", v.File, v.Line, v.Rule, v.Msg)
}

const badgerPath = "github.com/dgraph-io/badger"

// pureCoreDirs are the top-level folders whose non-test files must stay pure.
var pureCoreDirs = []string{"ring", "consistency"}

// forbiddenInCore are import paths (and everything below them) that reach
// the network, the OS or other processes.
var forbiddenInCore = []string{
	"net", "os", "syscall", "plugin", "io/ioutil", "log/syslog",
	"golang.org/x/sys", "golang.org/x/net", "google.golang.org/grpc",
}

// clockFuncs are the time functions that read the wall or monotonic clock,
// or wait on it.
var clockFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "Tick": true, "NewTimer": true, "NewTicker": true,
}

// Check parses every Go file under root, a module's directory, and returns
// the violations sorted by file and line. Like the go tool it skips
// testdata, vendor and directories starting with '.' or '_', and nested
// modules. The error is for unreadable or unparsable files.
func Check(root string) ([]Violation, error) {
	var out []Violation
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(path, d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(d.Name(), ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		vs, err := checkFile(fset, path, filepath.ToSlash(rel))
		out = append(out, vs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Violation) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Msg, b.Msg))
	})
	return out, nil
}

func skipDir(path, name string) bool {
	if name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
		return true
	}
	_, err := os.Stat(filepath.Join(path, "go.mod"))
	return err == nil
}

func checkFile(fset *token.FileSet, path, rel string) ([]Violation, error) {
	top, _, _ := strings.Cut(rel, "/")
	pure := slices.Contains(pureCoreDirs, top) && !strings.HasSuffix(rel, "_test.go")
	mode := parser.ImportsOnly
	if pure {
		mode = 0 // the whole file, identifiers resolved: clock reads are in bodies
	}
	f, err := parser.ParseFile(fset, path, nil, mode)
	if err != nil {
		return nil, fmt.Errorf("archtest: %w", err)
	}
	var out []Violation
	report := func(pos token.Pos, rule Rule, format string, args ...any) {
		out = append(out, Violation{File: rel, Line: fset.Position(pos).Line, Rule: rule, Msg: fmt.Sprintf(format, args...)})
	}
	timeNames := map[string]bool{}
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			return nil, fmt.Errorf("archtest: %s: bad import %s", rel, imp.Path.Value)
		}
		if top != "shard" && under(p, badgerPath) {
			report(imp.Pos(), RuleBadgerOnlyInShard, "imports %s: only package shard may use Badger; go through shard's API", p)
		}
		if !pure {
			continue
		}
		for _, bad := range forbiddenInCore {
			if under(p, bad) {
				report(imp.Pos(), RulePureCore, "imports %s: %s is a pure core (no network, OS or process access); let the caller do the I/O", p, top)
			}
		}
		if p == "time" {
			switch {
			case imp.Name == nil:
				timeNames["time"] = true
			case imp.Name.Name == ".":
				report(imp.Pos(), RulePureCore, "dot-imports time: clock reads could not be checked; import it by name")
			case imp.Name.Name != "_":
				timeNames[imp.Name.Name] = true
			}
		}
	}
	if pure && len(timeNames) > 0 {
		checkClock(f, timeNames, top, report)
	}
	return out, nil
}

// checkClock reports every selector timepkg.F with F a clock function, as a
// call or as a function value (which reads the clock all the same when the
// holder calls it).
func checkClock(f *ast.File, timeNames map[string]bool, top string, report func(token.Pos, Rule, string, ...any)) {
	called := map[*ast.SelectorExpr]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel, ok := ast.Unparen(n.Fun).(*ast.SelectorExpr); ok {
				called[sel] = true
			}
		case *ast.SelectorExpr:
			x, ok := n.X.(*ast.Ident)
			// x.Obj is set for identifiers declared in the file: a local
			// variable that shadows the package name is not the package.
			if !ok || x.Obj != nil || !timeNames[x.Name] || !clockFuncs[n.Sel.Name] {
				return true
			}
			how := "uses time." + n.Sel.Name + " as a function value"
			if called[n] {
				how = "calls time." + n.Sel.Name
			}
			report(n.Pos(), RulePureCore, "%s: %s is a pure core and must not read the clock; take a clock (func() time.Time) from the caller", how, top)
		}
		return true
	})
}

// under reports whether import path p is base or below it.
func under(p, base string) bool {
	return p == base || strings.HasPrefix(p, base+"/")
}
