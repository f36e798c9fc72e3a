package runstatus

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
)

// WriteText prints v for people: the state and spec, the progress, a table
// of the members, the parameter servers' and the workers' numbers, and
// what could not be read.
func (v View) WriteText(w io.Writer) {
	state := v.State
	switch v.State {
	case StateRunning:
		state += ", leader " + v.Leader
	case StateStalled:
		state = "STALLED, leader " + v.Leader
	case StateDone:
		if v.Finished != nil {
			state += " at " + v.Finished.Local().Format("2006-01-02 15:04:05")
		}
	case StateWaiting:
		state += " for a coordinator"
	}
	fmt.Fprintf(w, "run %s: %s\n", v.Run, state)
	writeStall(w, v)
	s := v.Spec
	deal := "global shuffle"
	if s.Shuffle != job.ShuffleGlobal {
		deal = fmt.Sprintf("units of %d", s.UnitSize)
	}
	spec := fmt.Sprintf("%s, %d epochs, batch %d per worker, %d parameter servers, %s, seed %d", s.Mode, s.Epochs, s.Batch,
		s.ParamServers, deal, s.Seed)
	if s.Quorum > 0 {
		spec += fmt.Sprintf(", quorum %d", s.Quorum)
	}
	if s.Mode == job.ModeSSP {
		spec += fmt.Sprintf(", staleness %d", s.Staleness)
	}
	fmt.Fprintf(w, "  spec      %s\n  data      %s\n  out       %s\n", spec, s.Data, s.Out)
	if v.Model != "" {
		fmt.Fprintf(w, "  model     %s\n", v.Model)
	}
	if p := v.Progress; p != nil {
		phase := ""
		if p.Phase != "" && p.Phase != "training" {
			phase = " (" + p.Phase + ")"
		}
		line := fmt.Sprintf("epoch %d/%d%s, step %d, loss %.4f (epoch mean %.4f), %.1f img/s (epoch %.1f), %d images this epoch, %d live %s",
			p.Epoch, p.Epochs, phase, p.Step, p.Loss, p.EpochLoss, p.ImgPerSec, p.EpochImgPerSec, p.Images, p.Workers, plural(p.Workers, "worker"))
		if p.Done {
			line += ", all epochs trained"
		}
		age := time.Duration(v.ProgressAge * float64(time.Second))
		line += fmt.Sprintf(" (%s ago, by %s)", age.Round(time.Second), p.Leader)
		fmt.Fprintf(w, "  progress  %s\n", line)
		if p.ValEpoch > 0 {
			fmt.Fprintf(w, "  val       epoch %d: loss %.4f, mAP %.4f\n", p.ValEpoch, p.ValLoss, p.ValMAP)
		}
	} else {
		fmt.Fprintf(w, "  progress  none yet\n")
	}

	fmt.Fprintf(w, "\nmembers (%d)\n", len(v.Members))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ROLE\tID\tRANK\tGRPC\tMETRICS\tGOSSIP\tVERSION\tWIRE")
	for _, m := range v.Members {
		id := m.ID
		if m.Leader {
			id += " (leader)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.Role, id, m.Rank, dash(m.Addrs["grpc"]), dash(m.Addrs["metrics"]), dash(m.Addrs[cluster.AddrGossip]),
			dash(m.Version), dash(m.Wire))
	}
	tw.Flush()

	var pss, ws []Member
	for _, m := range v.Members {
		if m.PS != nil {
			pss = append(pss, m)
		}
		if m.Worker != nil {
			ws = append(ws, m)
		}
	}
	if len(pss) > 0 {
		fmt.Fprintln(w, "\nparameter servers")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tID\tVERSION\tSTEP\tWORKERS\tPENDING\tBYTES IN\tBYTES OUT\tPUSHES OK\tREJECTED\tMISSING\t")
		for _, m := range pss {
			p := m.PS
			fmt.Fprintf(tw, "\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t\n", m.ID, p.Version, p.Step, p.Workers, p.Pending,
				humanBytes(p.BytesIn), humanBytes(p.BytesOut), p.Accepted, p.Rejected, p.Missing)
		}
		tw.Flush()
		for _, m := range pss {
			if len(m.PS.RejectedBy) > 0 {
				reasons := make([]string, 0, len(m.PS.RejectedBy))
				for r, n := range m.PS.RejectedBy {
					reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
				}
				slices.Sort(reasons)
				fmt.Fprintf(w, "  %s rejected: %s\n", m.ID, strings.Join(reasons, ", "))
			}
		}
	}
	if len(ws) > 0 {
		fmt.Fprintln(w, "\nworkers")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tID\tSTEPS\tIMAGES\tLOSS\tINPUT STALL\t")
		for _, m := range ws {
			x := m.Worker
			fmt.Fprintf(tw, "\t%s\t%.0f\t%.0f\t%.4f\t%.1fs\t\n", m.ID, x.Steps, x.Images, x.Loss, x.InputStall)
		}
		tw.Flush()
	}
	if len(v.Problems) > 0 {
		fmt.Fprintln(w, "\nnot shown")
		for _, p := range v.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

// writeStall prints, under the run's state, a stall the leader reports and
// a progress record that is stale.
func writeStall(w io.Writer, v View) {
	p := v.Progress
	if p == nil {
		return
	}
	age := time.Duration(v.ProgressAge * float64(time.Second)).Round(time.Second)
	if v.ProgressStale {
		every := time.Duration(p.Interval * float64(time.Second))
		if every <= 0 {
			every = coordinator.ProgressInterval
		}
		fmt.Fprintf(w, "  STALE     the leader's progress record is %s old (written every %s): %s is dead, hung or cut off from etcd\n",
			age, every, p.Leader)
	}
	if p.StalledFor <= 0 {
		return
	}
	stalled := time.Duration(p.StalledFor * float64(time.Second))
	when := ""
	if !v.ProgressStale {
		stalled += age // the record's figure was as of its writing
	} else {
		when = fmt.Sprintf(" (as of %s ago)", age)
	}
	line := fmt.Sprintf("stalled for %.0f s%s, waiting for %s", stalled.Seconds(), when, dash(p.WaitingFor))
	if !p.LastStep.IsZero() {
		line += ", last progress at " + p.LastStep.Local().Format("15:04:05")
	}
	if p.StallActions > 0 {
		line += fmt.Sprintf(", %d watchdog %s taken", p.StallActions, plural(p.StallActions, "action"))
	}
	fmt.Fprintf(w, "  STALLED   %s\n", line)
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
