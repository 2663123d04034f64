package apidocs

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
)

// route is one path template of the spec, split into segments.
type route struct {
	segs    []string
	methods []string
}

var routes = sync.OnceValue(func() []route {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(spec, &doc); err != nil {
		panic("apidocs: embedded spec: " + err.Error()) // checked by the tests
	}
	var rs []route
	for p, ops := range doc.Paths {
		r := route{segs: strings.Split(strings.Trim(p, "/"), "/")}
		for m := range ops {
			if m := strings.ToUpper(m); slices.Contains([]string{"GET", "PUT", "POST", "DELETE", "PATCH"}, m) {
				r.methods = append(r.methods, m)
			}
		}
		rs = append(rs, r)
	}
	return rs
})

// Allow returns the methods the REST API serves at path, as the value of an
// Allow header ("GET, POST"), or "" when no route matches (the gateway
// serves no HEAD or OPTIONS). It reads the
// routes from the embedded spec (generated from the same HTTP rules as the
// gateway), for the gateway's answer to a wrong method: 405 with Allow.
func Allow(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var methods, verbless []string
	for _, r := range routes() {
		if match(r.segs, segs) {
			if strings.Contains(r.segs[len(r.segs)-1], "}:") {
				methods = append(methods, r.methods...)
			} else {
				verbless = append(verbless, r.methods...)
			}
		}
	}
	// Like the gateway, a path ending in ":verb" goes to the templates with
	// that verb when there are any; otherwise the colon is part of a value.
	if len(methods) == 0 {
		methods = verbless
	}
	if len(methods) == 0 {
		return ""
	}
	slices.Sort(methods)
	return strings.Join(slices.Compact(methods), ", ")
}

// match reports whether a path matches a template: "{name}" matches one
// non-empty segment, "{name}:verb" one ending in ":verb".
func match(tmpl, segs []string) bool {
	if len(tmpl) != len(segs) {
		return false
	}
	for i, t := range tmpl {
		s := segs[i]
		if !strings.HasPrefix(t, "{") {
			if t != s {
				return false
			}
			continue
		}
		end := strings.IndexByte(t, '}')
		if end < 0 {
			return false
		}
		if verb := t[end+1:]; verb != "" {
			v, ok := strings.CutSuffix(s, verb)
			if !ok {
				return false
			}
			s = v
		}
		if s == "" {
			return false
		}
	}
	return true
}
