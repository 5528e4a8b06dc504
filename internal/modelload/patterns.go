package modelload

import (
	"fmt"
	"regexp"
	"strings"
)

// Patterns selects files by name with huggingface_hub's rules
// (huggingface_hub.utils.filter_repo_objects): a file is kept when Allow is
// empty or one of its patterns matches, and no Ignore pattern matches. A
// pattern is matched against the whole slash-separated path with Python's
// fnmatch rules: "*" matches any run of characters, "/" included, "?" one
// character, "[seq]" and "[!seq]" a character set; matching is
// case-sensitive. A pattern ending in "/" matches everything under that
// directory ("onnx/" is "onnx/*").
type Patterns struct {
	allow, ignore []*regexp.Regexp
}

// NewPatterns compiles allow and ignore patterns; an empty pattern or an
// unterminated "[" is an error naming it.
func NewPatterns(allow, ignore []string) (*Patterns, error) {
	p := &Patterns{}
	var err error
	if p.allow, err = compileFnmatch(allow); err != nil {
		return nil, err
	}
	if p.ignore, err = compileFnmatch(ignore); err != nil {
		return nil, err
	}
	return p, nil
}

// Match says whether name is kept.
func (p *Patterns) Match(name string) bool {
	if p == nil {
		return true
	}
	if len(p.allow) > 0 && !anyMatch(p.allow, name) {
		return false
	}
	return !anyMatch(p.ignore, name)
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func compileFnmatch(pats []string) ([]*regexp.Regexp, error) {
	var out []*regexp.Regexp
	for _, pat := range pats {
		if pat == "" {
			return nil, fmt.Errorf("empty file pattern")
		}
		if strings.HasSuffix(pat, "/") {
			pat += "*"
		}
		re, err := fnmatchRegexp(pat)
		if err != nil {
			return nil, err
		}
		out = append(out, re)
	}
	return out, nil
}

// fnmatchRegexp translates an fnmatch pattern as Python's fnmatch.translate
// does.
func fnmatchRegexp(pat string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '[':
			j := i + 1
			if j < len(pat) && pat[j] == '!' {
				j++
			}
			if j < len(pat) && pat[j] == ']' {
				j++
			}
			for j < len(pat) && pat[j] != ']' {
				j++
			}
			if j >= len(pat) {
				return nil, fmt.Errorf("file pattern %q: unterminated [", pat)
			}
			set := pat[i+1 : j]
			neg := strings.HasPrefix(set, "!")
			if neg {
				set = set[1:]
			}
			b.WriteByte('[')
			if neg {
				b.WriteByte('^')
			}
			for k := 0; k < len(set); k++ {
				if set[k] == '\\' || set[k] == '^' || set[k] == '[' || set[k] == ']' && k > 0 {
					b.WriteByte('\\')
				}
				b.WriteByte(set[k])
			}
			b.WriteByte(']')
			i = j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`)$`)
	return regexp.Compile(b.String())
}
