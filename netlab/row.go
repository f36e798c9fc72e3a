package netlab

import "fmt"

// Header is the markdown table header of Row.Markdown.
const Header = "| workers | servers | link | mode | compression | overlap | k | img/s | step s | worker's step: compute / BN sync / push / pull s | push MB | link bound img/s | CPU share (coord / ps / workers / etcd) | coord CPU ms/step | etcd writes/step |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

// Markdown is the row as a line of the table under Header.
func (r Row) Markdown() string {
	c := r.Config
	return fmt.Sprintf("| %d | %d | %s | %s | %s | %s | %g | %.0f | %.3f | %.3f / %.3f / %.3f / %.3f | %.2f | %.0f | %.0f %% (%.0f / %.0f / %.0f / %.0f) | %.1f | %.1f |",
		c.Workers, c.Servers, rateName(c.Rate), modeName(c), c.Compression, onOff(c.Overlap), c.Dilation, r.ImgPerSec, r.StepSeconds,
		r.ComputeS, r.BNSyncS, r.PushS, r.PullS, r.PushBytes/1e6, r.BoundImgPerSec, 100*r.CPUShare, 100*r.Coordinator, 100*r.Servers, 100*r.Workers, 100*r.Etcd,
		float64(r.CoordCPUPerStep.Microseconds())/1000, r.EtcdWritesPerStep)
}

// modeName is the update mode, and in sync mode whether BatchNorm is
// synchronised.
func modeName(c Config) string {
	if c.Mode == "sync" && !c.SyncBN {
		return "sync, local BN"
	}
	return c.Mode
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// rateName is a link rate as Gbit/s or Mbit/s.
func rateName(bits float64) string {
	if bits >= 1e9 {
		return fmt.Sprintf("%g Gbit/s", bits/1e9)
	}
	return fmt.Sprintf("%g Mbit/s", bits/1e6)
}
