package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
)

// ProgressInterval is how often the leader publishes its Progress.
const ProgressInterval = 2 * time.Second

// Progress is the run's live numbers, at Keys.TrainProgress: what `tailor
// status` shows without a metrics port. The leader writes it every
// ProgressInterval and once more when it stops leading; it is informational
// (exactly-once accounting is elsewhere) and keeps its last value after the
// run.
type Progress struct {
	Leader string   `json:"leader"` // the coordinator that wrote it
	Mode   job.Mode `json:"mode"`
	Epoch  int      `json:"epoch"` // the current epoch, from 1 (0: not started)
	Epochs int      `json:"epochs"`
	Step   int64    `json:"step"` // sync: the step being run or next
	// Loss is the last batch loss a worker reported; EpochLoss the mean
	// batch loss of the epoch so far.
	Loss      float64 `json:"loss"`
	EpochLoss float64 `json:"epoch_loss"`
	// Images is how many images of this epoch have been applied; ImgPerSec
	// the rate over the last interval, EpochImgPerSec over the epoch.
	Images      int `json:"images"`
	EpochImages int `json:"epoch_images,omitempty"` // the epoch's training images
	// ValEpoch is the last validated epoch (0: none yet), ValLoss and
	// ValMAP its validation loss and mAP.
	ValEpoch       int     `json:"val_epoch,omitempty"`
	ValLoss        float64 `json:"val_loss,omitempty"`
	ValMAP         float64 `json:"val_map,omitempty"`
	ImgPerSec      float64 `json:"img_per_s"`
	EpochImgPerSec float64 `json:"epoch_img_per_s"`
	Workers        int     `json:"workers"` // live workers
	// Done: every epoch was trained (the test report and the run's status
	// follow).
	Done bool `json:"done"`
	// Phase is what the leader does: "training", "validating",
	// "checkpointing", "waiting for parameter servers", ... (empty in a
	// record of an older leader).
	Phase string `json:"phase,omitempty"`
	// LastStep is when training last made progress: a sync step decided
	// with a gradient, an async batch reported (zero: none yet).
	LastStep time.Time `json:"last_step,omitzero"`
	// StalledFor is how long training has made no progress, in seconds,
	// once the leader's watchdog has declared a stall (spec.StallTimeout;
	// time spent validating or checkpointing left out); 0 while training
	// progresses. WaitingFor says what the leader waits for, in a few
	// words; WaitingWorkers and WaitingServers name them; StallActions
	// counts the watchdog's actions in this stall (re-dispatch, then
	// rollbacks).
	StalledFor     float64  `json:"stalled_s,omitempty"`
	WaitingFor     string   `json:"waiting_for,omitempty"`
	WaitingWorkers []string `json:"waiting_workers,omitempty"`
	WaitingServers []string `json:"waiting_servers,omitempty"`
	StallActions   int      `json:"stall_actions,omitempty"`
	// Interval is how often the leader writes the record, in seconds: a
	// record much older than that is stale (the leader is dead, hung or
	// cut off from etcd).
	Interval float64   `json:"interval_s,omitempty"`
	Updated  time.Time `json:"updated"`
	// Contacts are the leader's gossip contacts with every other
	// registered member at Updated.
	Contacts []Contact `json:"contacts,omitempty"`
}

// Contact is when the leader last heard from a member over gossip (the
// answer to its last probe of the member).
type Contact struct {
	Role string `json:"role"`
	ID   string `json:"id"`
	// Live: the member is in the leader's live view (its lease holds and
	// gossip has it alive).
	Live    bool      `json:"live"`
	LastAck time.Time `json:"last_ack,omitzero"`
	RTTms   float64   `json:"rtt_ms,omitempty"`
}

// progressSample is the previous sample, for the interval rate.
type progressSample struct {
	epoch  int
	images int
	at     time.Time
}

// startProgress publishes the leader's Progress every interval until the
// returned stop is called; stop writes a last record and returns once the
// publisher has ended. run calls it once its metrics are registered:
//
//	defer l.startProgress(ctx, ProgressInterval)()
func (l *leader) startProgress(ctx context.Context, interval time.Duration) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	ended := make(chan struct{})
	var last progressSample
	go func() {
		defer close(ended)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			if err := l.publishProgress(pctx, &last); err != nil && pctx.Err() == nil {
				l.log.Debug("progress not published", "err", err)
			}
		}
	}()
	return func() {
		cancel()
		<-ended
		fctx, c := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer c()
		if err := l.publishProgress(fctx, &last); err != nil {
			l.log.Debug("last progress not published", "err", err)
		}
	}
}

// publishProgress writes the current Progress, as long as this coordinator
// still leads (leader guard). last is the previous sample; it is updated.
func (l *leader) publishProgress(ctx context.Context, last *progressSample) error {
	p := l.progress(last)
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	key := cluster.RunKeys(l.spec.Run).TrainProgress()
	resp, err := l.cli.Txn(ctx).If(l.term.Guard()).Then(clientv3.OpPut(key, string(b))).Commit()
	if ctx.Err() == nil {
		l.journal.etcdWrite(err)
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("put %s: no longer the leader", key)
	}
	return nil
}

// progress samples the leader's numbers: the epoch, step and last loss from
// its metrics, the epoch's images and mean loss from its epoch statistics.
func (l *leader) progress(last *progressSample) Progress {
	now := time.Now()
	p := Progress{Leader: l.cfg.ID, Mode: l.spec.Mode, Epochs: l.spec.Epochs, Updated: now.UTC()}
	if mfs, err := l.reg.Gather(); err == nil {
		for _, mf := range mfs {
			if len(mf.GetMetric()) == 0 {
				continue
			}
			v := mf.GetMetric()[0].GetGauge().GetValue()
			switch mf.GetName() {
			case "tailor_coordinator_epoch":
				p.Epoch = int(v)
			case "tailor_coordinator_step":
				p.Step = int64(v)
			case "tailor_coordinator_loss":
				p.Loss = v
			}
		}
	}
	v := l.board.view()
	images, lossSum, lossN, t0, done := v.stats.images, v.stats.lossSum, v.stats.lossN, v.stats.t0, v.over
	p.Images, p.Done, p.EpochImages = images, done, v.stats.total
	if e := l.eval.last(); e != nil {
		p.ValEpoch, p.ValLoss, p.ValMAP = e.Epoch, e.Val.Loss, e.Val.MAP
	}
	if lossN > 0 {
		p.EpochLoss = lossSum / float64(lossN)
	}
	if secs := now.Sub(t0).Seconds(); !t0.IsZero() && secs > 0 {
		p.EpochImgPerSec = float64(images) / secs
	}
	switch {
	case last.at.IsZero():
		p.ImgPerSec = p.EpochImgPerSec
	case p.Epoch == last.epoch && images >= last.images:
		if dt := now.Sub(last.at).Seconds(); dt > 0 {
			p.ImgPerSec = float64(images-last.images) / dt
		}
	default: // a new epoch began since the last sample
		from := last.at
		if t0.After(from) {
			from = t0
		}
		if dt := now.Sub(from).Seconds(); dt > 0 {
			p.ImgPerSec = float64(images) / dt
		}
	}
	p.ImgPerSec, p.EpochImgPerSec = round1(p.ImgPerSec), round1(p.EpochImgPerSec)
	p.Workers = len(l.mem.Members(cluster.RoleWorker))
	p.Interval = l.progressEvery.Seconds()
	for _, c := range l.mem.Contacts() {
		ct := Contact{Role: string(c.Role), ID: c.ID, Live: c.Live, RTTms: round1(float64(c.RTT.Microseconds()) / 1000)}
		if !c.At.IsZero() {
			ct.LastAck = c.At.UTC()
		}
		p.Contacts = append(p.Contacts, ct)
	}
	l.stallProgress(&p)
	*last = progressSample{epoch: p.Epoch, images: images, at: now}
	return p
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
