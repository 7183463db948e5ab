// chart-render renders a Helm chart the way `helm template` does, for machines without helm.
//
// It uses the engine helm itself uses (Go's text/template with sprig) and implements the part of
// helm the basho charts rely on:
//
//   - .Values: the chart's values.yaml deep-merged with each -f file in order (a null in a later
//     file removes the key), numbers read as float64 like helm does, then checked against the
//     chart's values.schema.json (JSON Schema draft-07) when there is one;
//   - .Release.Name/.Namespace/.Service/.IsInstall/.IsUpgrade/.Revision, .Chart (the fields of
//     Chart.yaml: .Name, .Version, .AppVersion, .Description, .KubeVersion, .Type),
//     .Capabilities.KubeVersion (.Version/.Major/.Minor/.GitVersion), .Capabilities.APIVersions.Has
//     (built-in groups, plus each --api-versions), .Template.Name/.BasePath, .Files.Get;
//   - functions: sprig's (without env and expandenv, as in helm) plus include, tpl, required,
//     toYaml, fromYaml, fromYamlArray, toJson, fromJson, fromJsonArray and lookup (always empty,
//     as in `helm template`);
//   - missing keys render as empty, as in helm;
//   - Chart.yaml's kubeVersion is checked against --kube-version.
//
// Every file under templates/ is parsed (so named templates in _*.tpl are shared); every file
// except _*.tpl and NOTES.txt is rendered, split at `---` lines and parsed as YAML; empty
// documents are dropped and a document that is not valid YAML, or not a Kubernetes object with
// apiVersion, kind and metadata.name, is an error naming its template. NOTES.txt is rendered too
// so that its mistakes show, and printed only with --notes.
//
// Output: YAML documents with `# Source:` comments (the default), or with -o json one JSON object
// per line. Exit status 1 on any error, with the error on stderr.
//
// Build without network against Debian's Go packages:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o chart-render tools/chart-render/main.go
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver/v3"
	"github.com/Masterminds/sprig/v3"
	"github.com/xeipuuv/gojsonschema"
	"gopkg.in/yaml.v3"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	chartDir    string
	valueFiles  listFlag
	sets        listFlag
	releaseName string
	namespace   string
	kubeVersion string
	apiVersions listFlag
	output      string
	notes       bool
}

func main() {
	var o options
	flag.StringVar(&o.releaseName, "name", "release-name", "release name (.Release.Name)")
	flag.StringVar(&o.namespace, "namespace", "default", "release namespace (.Release.Namespace)")
	flag.Var(&o.valueFiles, "f", "values file merged over the chart's values.yaml (repeatable)")
	flag.Var(&o.sets, "set", "KEY.PATH=VALUE, VALUE read as YAML (repeatable, after the -f files)")
	flag.StringVar(&o.kubeVersion, "kube-version", "1.30.0", "Kubernetes version (.Capabilities.KubeVersion)")
	flag.Var(&o.apiVersions, "api-versions", "extra API version the cluster serves, e.g. monitoring.coreos.com/v1 (repeatable)")
	flag.StringVar(&o.output, "o", "yaml", "output: yaml (documents) or json (one object per line)")
	flag.BoolVar(&o.notes, "notes", false, "also print the rendered NOTES.txt (on stderr)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: chart-render [flags] CHART_DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	o.chartDir = flag.Arg(0)
	if o.output != "yaml" && o.output != "json" {
		fail(fmt.Errorf("-o %q: use yaml or json", o.output))
	}
	if err := run(o, os.Stdout, os.Stderr); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "chart-render: error: %v\n", err)
	os.Exit(1)
}

// renderedDoc is one object of the output, with the template it came from.
type renderedDoc struct {
	source string
	object map[string]interface{}
}

func run(o options, stdout, stderr io.Writer) error {
	chart, err := readYAMLFile(filepath.Join(o.chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chartMap, ok := chart.(map[string]interface{})
	if !ok {
		return fmt.Errorf("%s/Chart.yaml is not a mapping", o.chartDir)
	}
	chartName, _ := chartMap["name"].(string)
	if chartName == "" {
		return fmt.Errorf("%s/Chart.yaml has no name", o.chartDir)
	}
	if err := checkKubeVersion(chartMap, o.kubeVersion); err != nil {
		return err
	}
	values, err := loadValues(o)
	if err != nil {
		return err
	}
	if err := validateValues(o.chartDir, values); err != nil {
		return err
	}
	docs, notes, err := render(o, chartName, chartMap, values)
	if err != nil {
		return err
	}
	for _, d := range docs {
		switch o.output {
		case "json":
			line, err := json.Marshal(d.object)
			if err != nil {
				return fmt.Errorf("%s: %v", d.source, err)
			}
			fmt.Fprintf(stdout, "%s\n", line)
		default:
			text, err := toYAML(d.object)
			if err != nil {
				return fmt.Errorf("%s: %v", d.source, err)
			}
			fmt.Fprintf(stdout, "---\n# Source: %s\n%s\n", d.source, text)
		}
	}
	if o.notes {
		fmt.Fprintf(stderr, "%s\n", notes)
	}
	return nil
}

// checkKubeVersion refuses a cluster version outside the chart's kubeVersion, as helm does.
func checkKubeVersion(chart map[string]interface{}, version string) error {
	want, _ := chart["kubeVersion"].(string)
	if want == "" {
		return nil
	}
	c, err := semver.NewConstraint(want)
	if err != nil {
		return fmt.Errorf("Chart.yaml kubeVersion %q: %v", want, err)
	}
	v, err := semver.NewVersion(strings.TrimPrefix(version, "v"))
	if err != nil {
		return fmt.Errorf("--kube-version %q: %v", version, err)
	}
	if !c.Check(v) {
		return fmt.Errorf("chart requires kubeVersion %s, which is incompatible with Kubernetes %s", want, version)
	}
	return nil
}

// loadValues answers the chart's values.yaml merged with each -f file and each --set.
func loadValues(o options) (map[string]interface{}, error) {
	base, err := readValuesFile(filepath.Join(o.chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	for _, f := range o.valueFiles {
		over, err := readValuesFile(f)
		if err != nil {
			return nil, err
		}
		base = coalesce(base, over)
	}
	for _, s := range o.sets {
		k, v, found := strings.Cut(s, "=")
		if !found || k == "" {
			return nil, fmt.Errorf("--set %q: use KEY.PATH=VALUE", s)
		}
		var parsed interface{}
		if err := yaml.Unmarshal([]byte(v), &parsed); err != nil {
			return nil, fmt.Errorf("--set %q: %v", s, err)
		}
		over := map[string]interface{}{}
		cur := over
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			next := map[string]interface{}{}
			cur[p] = next
			cur = next
		}
		cur[parts[len(parts)-1]] = parsed
		jsonish, err := jsonRoundTrip(over)
		if err != nil {
			return nil, fmt.Errorf("--set %q: %v", s, err)
		}
		base = coalesce(base, jsonish.(map[string]interface{}))
	}
	return base, nil
}

func readValuesFile(name string) (map[string]interface{}, error) {
	v, err := readYAMLFile(name)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: values must be a mapping", name)
	}
	return m, nil
}

// readYAMLFile parses one YAML document into JSON-shaped data (numbers as float64), as helm's
// sigs.k8s.io/yaml does.
func readYAMLFile(name string) (interface{}, error) {
	text, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(text, &v); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	out, err := jsonRoundTrip(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return out, nil
}

func jsonRoundTrip(v interface{}) (interface{}, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out interface{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// coalesce merges over into base the way helm merges values files: maps deep-merge, anything
// else replaces, and null deletes.
func coalesce(base, over map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		bm, bIsMap := out[k].(map[string]interface{})
		om, oIsMap := v.(map[string]interface{})
		if bIsMap && oIsMap {
			out[k] = coalesce(bm, om)
		} else {
			out[k] = v
		}
	}
	return out
}

func validateValues(chartDir string, values map[string]interface{}) error {
	schemaPath := filepath.Join(chartDir, "values.schema.json")
	schemaText, err := os.ReadFile(schemaPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(
		gojsonschema.NewBytesLoader(schemaText),
		gojsonschema.NewGoLoader(values),
	)
	if err != nil {
		return fmt.Errorf("%s: %v", schemaPath, err)
	}
	if result.Valid() {
		return nil
	}
	var lines []string
	for _, e := range result.Errors() {
		lines = append(lines, "  - "+e.String())
	}
	sort.Strings(lines)
	return fmt.Errorf("values don't meet the schema %s:\n%s", schemaPath, strings.Join(lines, "\n"))
}

// capabilities is .Capabilities.
type capabilities struct {
	KubeVersion kubeVersion
	APIVersions apiVersions
}

type kubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k kubeVersion) String() string { return k.Version }

type apiVersions []string

// Has answers whether the cluster serves a group/version, or a group/version/Kind.
func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// builtinAPIVersions are the group/versions every supported cluster serves.
var builtinAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"coordination.k8s.io/v1", "discovery.k8s.io/v1", "scheduling.k8s.io/v1",
	"apiextensions.k8s.io/v1", "admissionregistration.k8s.io/v1",
}

func newCapabilities(o options) (capabilities, error) {
	v := strings.TrimPrefix(o.kubeVersion, "v")
	m := regexp.MustCompile(`^(\d+)\.(\d+)(\.\d+)?$`).FindStringSubmatch(v)
	if m == nil {
		return capabilities{}, fmt.Errorf("--kube-version %q: use MAJOR.MINOR[.PATCH]", o.kubeVersion)
	}
	full := "v" + m[1] + "." + m[2]
	if m[3] != "" {
		full += m[3]
	} else {
		full += ".0"
	}
	apis := append(apiVersions{}, builtinAPIVersions...)
	apis = append(apis, o.apiVersions...)
	return capabilities{
		KubeVersion: kubeVersion{Version: full, Major: m[1], Minor: m[2], GitVersion: full},
		APIVersions: apis,
	}, nil
}

// files is .Files: the chart's own files, read on demand.
type files struct{ root string }

// Get answers the content of a file of the chart, or "" when it has none.
func (f files) Get(name string) string {
	clean := filepath.Clean(name)
	if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(f.root, clean))
	if err != nil {
		return ""
	}
	return string(b)
}

func render(o options, chartName string, chart, values map[string]interface{}) ([]renderedDoc, string, error) {
	caps, err := newCapabilities(o)
	if err != nil {
		return nil, "", err
	}
	chartObj := map[string]interface{}{}
	for k, v := range chart {
		if k == "" {
			continue
		}
		chartObj[strings.ToUpper(k[:1])+k[1:]] = v
	}
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name":      o.releaseName,
			"Namespace": o.namespace,
			"Service":   "Helm",
			"IsInstall": true,
			"IsUpgrade": false,
			"Revision":  1,
		},
		"Chart":        chartObj,
		"Capabilities": caps,
		"Files":        files{root: o.chartDir},
	}

	templatesDir := filepath.Join(o.chartDir, "templates")
	var names []string
	err = filepath.WalkDir(templatesDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	sort.Strings(names)

	root := template.New("gotpl").Option("missingkey=zero")
	includedNames := map[string]int{}
	funcs := funcMap()
	funcs["include"] = func(name string, data interface{}) (string, error) {
		const recursionMax = 1000
		if includedNames[name] > recursionMax {
			return "", fmt.Errorf("include %q: too deep a recursion", name)
		}
		includedNames[name]++
		defer func() { includedNames[name]-- }()
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	root.Funcs(funcs)

	sources := map[string]string{}
	for _, p := range names {
		rel, _ := filepath.Rel(o.chartDir, p)
		name := path.Join(chartName, filepath.ToSlash(rel))
		text, err := os.ReadFile(p)
		if err != nil {
			return nil, "", err
		}
		if _, err := root.New(name).Parse(string(text)); err != nil {
			return nil, "", err
		}
		sources[name] = p
	}

	var docs []renderedDoc
	notes := ""
	for _, p := range names {
		rel, _ := filepath.Rel(o.chartDir, p)
		name := path.Join(chartName, filepath.ToSlash(rel))
		base := filepath.Base(p)
		if strings.HasPrefix(base, "_") {
			continue
		}
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{
			"Name":     name,
			"BasePath": path.Join(chartName, "templates"),
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return nil, "", err
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			notes = out
			continue
		}
		if !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") && !strings.HasSuffix(base, ".tpl") {
			continue
		}
		parsed, err := splitDocuments(name, out)
		if err != nil {
			return nil, "", err
		}
		docs = append(docs, parsed...)
	}
	if err := checkUnique(docs); err != nil {
		return nil, "", err
	}
	return docs, notes, nil
}

var separator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// splitDocuments splits one template's output into objects, dropping empty documents.
func splitDocuments(source, out string) ([]renderedDoc, error) {
	var docs []renderedDoc
	for i, part := range separator.Split(out, -1) {
		var v interface{}
		if err := yaml.Unmarshal([]byte(part), &v); err != nil {
			return nil, fmt.Errorf("%s: document %d is not valid YAML: %v\n%s", source, i+1, err, numbered(part))
		}
		if v == nil {
			continue
		}
		j, err := jsonRoundTrip(v)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %v", source, i+1, err)
		}
		obj, ok := j.(map[string]interface{})
		if !ok {
			return nil, fmt.Errorf("%s: document %d is not a mapping:\n%s", source, i+1, numbered(part))
		}
		if err := checkObject(obj); err != nil {
			return nil, fmt.Errorf("%s: document %d: %v", source, i+1, err)
		}
		docs = append(docs, renderedDoc{source: source, object: obj})
	}
	return docs, nil
}

func checkObject(obj map[string]interface{}) error {
	for _, k := range []string{"apiVersion", "kind"} {
		if s, _ := obj[k].(string); s == "" {
			return fmt.Errorf("no %s", k)
		}
	}
	meta, _ := obj["metadata"].(map[string]interface{})
	if name, _ := meta["name"].(string); name == "" {
		return errors.New("no metadata.name")
	}
	return nil
}

// checkUnique refuses two objects of one kind, namespace and name, which helm refuses too.
func checkUnique(docs []renderedDoc) error {
	seen := map[string]string{}
	for _, d := range docs {
		meta := d.object["metadata"].(map[string]interface{})
		ns, _ := meta["namespace"].(string)
		key := fmt.Sprintf("%v/%v %s/%s", d.object["apiVersion"], d.object["kind"], ns, meta["name"])
		if other, dup := seen[key]; dup {
			return fmt.Errorf("%s and %s both render %s", other, d.source, key)
		}
		seen[key] = d.source
	}
	return nil
}

func numbered(text string) string {
	var b strings.Builder
	for i, l := range strings.Split(text, "\n") {
		fmt.Fprintf(&b, "%4d | %s\n", i+1, l)
	}
	return b.String()
}

// funcMap is sprig's text functions without the environment, plus helm's own.
func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = func(v interface{}) string {
		s, err := toYAML(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(s, "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		var v interface{}
		if err := yaml.Unmarshal([]byte(s), &v); err != nil {
			m["Error"] = err.Error()
			return m
		}
		j, err := jsonRoundTrip(v)
		if err != nil {
			m["Error"] = err.Error()
			return m
		}
		if jm, ok := j.(map[string]interface{}); ok {
			return jm
		}
		return m
	}
	f["fromYamlArray"] = func(s string) []interface{} {
		var v interface{}
		if err := yaml.Unmarshal([]byte(s), &v); err != nil {
			return []interface{}{err.Error()}
		}
		j, err := jsonRoundTrip(v)
		if err != nil {
			return []interface{}{err.Error()}
		}
		a, _ := j.([]interface{})
		return a
	}
	f["toJson"] = func(v interface{}) string {
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(b)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromJsonArray"] = func(s string) []interface{} {
		var a []interface{}
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			return []interface{}{err.Error()}
		}
		return a
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

// toYAML marshals like helm's toYaml: through JSON first (so integers stay integers and keys are
// sorted), then as block YAML indented by two spaces.
func toYAML(v interface{}) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var j interface{}
	if err := dec.Decode(&j); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(numbersToGo(j)); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func numbersToGo(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]interface{}:
		for k, e := range x {
			x[k] = numbersToGo(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = numbersToGo(e)
		}
		return x
	default:
		return v
	}
}
