// Command checkdeps holds two lines of the monorepo's design that the Go
// tool does not check by itself:
//
//   - every third-party module that provides packages to a workspace
//     module's build (its packages and their tests, GOWORK=off) does so at
//     the same version in every module, and
//   - dependencies point one way: protocol and netsim import nothing of
//     ours, no production package imports netsim, and client and
//     bootstrap-server do not import each other.
//
// Run it from the repository root: go run ./tools/cmd/checkdeps.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

const prefix = "github.com/parlance-chat/parlance/"

// forbidden lists, per module, the module prefixes its non-test packages
// must not import.
var forbidden = map[string][]string{
	"protocol":         {prefix},
	"netsim":           {prefix},
	"client":           {prefix + "netsim", prefix + "bootstrap-server", prefix + "e2e", prefix + "tools"},
	"bootstrap-server": {prefix + "netsim", prefix + "client", prefix + "e2e", prefix + "tools"},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "checkdeps:", err)
		os.Exit(1)
	}
	fmt.Println("checkdeps: versions equal and dependencies point one way")
}

func run() error {
	dirs, err := output(".", "go", "list", "-m", "-f", "{{.Dir}}")
	if err != nil {
		return err
	}
	versions := map[string]map[string][]string{} // module path -> version -> our modules
	var problems []string
	for _, dir := range dirs {
		name := filepath.Base(dir)
		// Modules that only appear in the module graph (a dependency's
		// go.mod names them) but provide no package are not used, so their
		// version does not matter.
		list, err := output(dir, "go", "list", "-deps", "-test", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{end}}", "./...")
		if err != nil {
			return err
		}
		for _, line := range list {
			path, version, _ := strings.Cut(line, " ")
			if version == "" || strings.HasPrefix(path, prefix) {
				continue
			}
			if versions[path] == nil {
				versions[path] = map[string][]string{}
			}
			if !slices.Contains(versions[path][version], name) {
				versions[path][version] = append(versions[path][version], name)
			}
		}
		deps, err := output(dir, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...")
		if err != nil {
			return err
		}
		for _, dep := range deps {
			if strings.HasPrefix(dep, prefix+name+"/") || dep == prefix+name {
				continue
			}
			for _, bad := range forbidden[name] {
				if strings.HasPrefix(dep, bad) {
					problems = append(problems, fmt.Sprintf("%s imports %s (dependencies must point one way)", name, dep))
				}
			}
		}
	}
	paths := make([]string, 0, len(versions))
	for p := range versions {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if len(versions[p]) > 1 {
			var parts []string
			for v, mods := range versions[p] {
				parts = append(parts, fmt.Sprintf("%s in %s", v, strings.Join(mods, ", ")))
			}
			slices.Sort(parts)
			problems = append(problems, fmt.Sprintf("%s has different versions: %s", p, strings.Join(parts, "; ")))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	return nil
}

// output runs a command in dir with GOWORK=off and returns its lines.
func output(dir string, name string, args ...string) ([]string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if dir == "." {
		cmd.Env = os.Environ()
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %v\n%s", strings.Join(cmd.Args, " "), dir, err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}
