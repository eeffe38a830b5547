package main

import (
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version overrides the version read from the build info. Packagers may
// set it with -ldflags "-X main.version=v1.2.3"; empty (the default) takes
// the module version or the VCS revision the Go toolchain recorded.
var version string

// buildInfo is what the binary knows about its own build.
type buildInfo struct {
	version   string // module version, or the VCS revision, or "(devel)"
	revision  string // VCS revision, "" when not recorded (-buildvcs=false)
	modified  bool   // the work tree had uncommitted changes
	goVersion string
}

// readBuildInfo reads the running binary's build info.
func readBuildInfo() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return buildInfoFrom(bi, version)
}

// buildInfoFrom picks the version: an -ldflags override, else the main
// module's version (go build records a tag or a pseudo-version with the
// commit since Go 1.24; go install module@version records that version),
// else the VCS revision, else "(devel)".
func buildInfoFrom(bi *debug.BuildInfo, override string) buildInfo {
	out := buildInfo{version: override}
	if bi != nil {
		out.goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				out.revision = s.Value
			case "vcs.modified":
				out.modified = s.Value == "true"
			}
		}
		if out.version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			out.version = bi.Main.Version
		}
	}
	if out.version == "" && out.revision != "" {
		out.version = out.revision[:min(12, len(out.revision))]
		if out.modified {
			out.version += "-dirty"
		}
	}
	if out.version == "" {
		out.version = "(devel)"
	}
	return out
}

// String is the line `sealpost version` prints.
func (b buildInfo) String() string {
	s := "sealpost " + b.version
	if b.revision != "" {
		s += " revision " + b.revision
		if b.modified {
			s += " (modified)"
		}
	}
	if b.goVersion != "" {
		s += fmt.Sprintf(" %s", b.goVersion)
	}
	return s
}

// buildInfoGauge is sealpost_build_info: always 1, with the build in its
// labels, so dashboards can show which version each instance runs.
func buildInfoGauge(b buildInfo) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sealpost_build_info",
		Help: "Always 1; the labels name the running build: version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{
			"version": b.version, "revision": b.revision, "goversion": b.goVersion,
		},
	})
	g.Set(1)
	return g
}
