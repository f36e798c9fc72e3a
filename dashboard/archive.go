package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/runstatus"
)

// StateArchived is the state of a run known only from its checkpoints
// (its etcd keys are gone).
const StateArchived = "finished (checkpoints)"

// maxArchivedCheckpoints bounds the manifests read for one run's page.
const maxArchivedCheckpoints = 50

// archivedJob is one job of a run in the checkpoint store: its
// checkpoint folders, oldest first.
type archivedJob struct {
	run, job string
	names    []string
}

// archivedRuns lists the runs of the checkpoint store with their jobs.
func archivedRuns(ctx context.Context, loc checkpoint.Location) (map[string][]archivedJob, error) {
	objs, err := loc.Store.List(ctx, loc.Prefix)
	if err != nil {
		return nil, fmt.Errorf("list the checkpoint store: %w", err)
	}
	jobs := map[[2]string][]string{}
	for _, o := range objs {
		parts := strings.Split(strings.TrimPrefix(o, loc.Prefix), "/")
		if len(parts) != 4 || parts[3] != checkpoint.MetaName {
			continue
		}
		if _, _, ok := checkpoint.ParseName(parts[2]); ok {
			k := [2]string{parts[0], parts[1]}
			jobs[k] = append(jobs[k], parts[2])
		}
	}
	out := map[string][]archivedJob{}
	for k, names := range jobs {
		slices.Sort(names)
		out[k[0]] = append(out[k[0]], archivedJob{run: k[0], job: k[1], names: names})
	}
	return out, nil
}

// latest returns the job of jobs whose newest checkpoint was made last,
// with that checkpoint's manifest.
func latest(ctx context.Context, loc checkpoint.Location, jobs []archivedJob) (archivedJob, *checkpoint.Meta, error) {
	var best archivedJob
	var bestMeta *checkpoint.Meta
	var errs []string
	for _, j := range jobs {
		m, err := loc.ReadMeta(ctx, j.run, j.job, j.newest())
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if bestMeta == nil || m.Created.After(bestMeta.Created) {
			best, bestMeta = j, m
		}
	}
	if bestMeta == nil {
		return best, nil, fmt.Errorf("no readable checkpoint: %s", strings.Join(errs, "; "))
	}
	return best, bestMeta, nil
}

// newest is the job's newest checkpoint's folder name (a job's names sort
// by step, then epochs).
func (j archivedJob) newest() string { return j.names[len(j.names)-1] }

// archivedView is a run's page from its checkpoints alone: the curves from
// the newest manifest's validation history, the timeline from the
// manifests of the newest checkpoints.
func archivedView(ctx context.Context, loc checkpoint.Location, jobs []archivedJob) (RunView, error) {
	j, m, err := latest(ctx, loc, jobs)
	if err != nil {
		return RunView{}, err
	}
	return archivedFrom(ctx, loc, j, m, true)
}

// archivedFrom is the page of job j of a run, m its newest manifest; the
// checkpoint timeline only if timeline (it reads their manifests).
func archivedFrom(ctx context.Context, loc checkpoint.Location, j archivedJob, m *checkpoint.Meta, timeline bool) (RunView, error) {
	var err error
	var vs eval.ValidatorState
	if len(m.Validator) > 0 {
		if err := json.Unmarshal(m.Validator, &vs); err != nil {
			return RunView{}, fmt.Errorf("checkpoint %s: validator: %w", j.newest(), err)
		}
	}
	rv := RunView{Members: []MemberRow{}, Servers: []ServerRow{}, Events: []coordinator.Event{}, Checkpoints: []coordinator.CheckpointRecord{}}
	rv.Status = runstatus.View{Run: j.run, At: m.Created, State: StateArchived, Members: []runstatus.Member{}, Spec: runstatus.Spec{Mode: job.Mode(m.Mode)}}
	var spec struct {
		Epochs int `json:"epochs"`
	}
	if err := json.Unmarshal(m.Spec, &spec); err == nil {
		rv.Status.Spec.Epochs = spec.Epochs
	}
	rv.History.Labels, rv.History.Best = m.Labels, vs.Best
	for _, e := range vs.History {
		rv.History.Epochs = append(rv.History.Epochs, coordinator.EpochRecord{Epoch: e.Epoch, TrainLoss: e.TrainLoss, ValLoss: e.Val.Loss,
			ValMAP: e.Val.MAP, MacroF1: e.Val.MacroF1, LR: e.LR, ImgPerSec: e.ImgPerSec, Seconds: e.Seconds})
	}
	names := j.names[max(0, len(j.names)-maxArchivedCheckpoints):]
	if !timeline {
		names = nil
	}
	for _, name := range names {
		cm := m
		if name != j.newest() {
			if cm, err = loc.ReadMeta(ctx, j.run, j.job, name); err != nil {
				rv.Status.Problems = append(rv.Status.Problems, err.Error())
				continue
			}
		}
		var bytes int64
		for _, p := range cm.Parts {
			bytes += p.Bytes
		}
		rv.Checkpoints = append(rv.Checkpoints, coordinator.CheckpointRecord{Name: name, Reason: cm.Reason, Step: cm.Step, Epochs: cm.Epochs,
			Best: cm.Best, Created: cm.Created, Bytes: bytes})
	}
	rv.Pointer = &checkpoint.Pointer{JobID: j.job, Name: j.newest(), Step: m.Step, Epochs: m.Epochs, Meta: m.Checksum, Created: m.Created}
	rv.Summary = summarise(rv.Status, rv.History)
	rv.Summary.Epoch, rv.Summary.Step, rv.Summary.Updated = m.Epochs, m.Step, m.Created
	return rv, nil
}
