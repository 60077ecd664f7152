package head

import (
	"context"
	"fmt"

	"github.com/gray-cluster/gray/gcs"
)

// openGCS opens the store of the GCS tables that Config.GCSStorage names
// (see gcs.OpenStore: by default the bbolt file under StateDir) and the
// tables kept on it: the internal KV, the job counter and the actor table
// (the node and placement group tables are the cluster's, see
// restoreTables). On Redis it first takes the leader lease (takeLease),
// so that the tables are loaded by the one active head.
func (h *Head) openGCS(ctx context.Context) error {
	st, err := gcs.OpenStore(ctx, h.cfg.GCSStorage, h.cfg.StateDir, h.log)
	if err != nil {
		return fmt.Errorf("head: GCS storage: %w", err)
	}
	if err := h.takeLease(ctx, st); err != nil {
		st.Close()
		return err
	}
	jobs, err := gcs.OpenJobs(ctx, st)
	if err != nil {
		st.Close()
		return fmt.Errorf("head: GCS storage %s: %w", st.Describe(), err)
	}
	actors, err := gcs.OpenActors(ctx, st)
	if err != nil {
		st.Close()
		return fmt.Errorf("head: GCS storage %s: %w", st.Describe(), err)
	}
	h.gcsStore, h.KV, h.Jobs, h.Actors = st, gcs.NewStoreKV(st), jobs, actors
	h.log.Info("GCS tables", "storage", st.Describe())
	return nil
}

// GCSStorage says where the GCS tables are kept ("" before Start).
func (h *Head) GCSStorage() string {
	if h.gcsStore == nil {
		return ""
	}
	return h.gcsStore.Describe()
}

func (h *Head) closeGCS() {
	h.releaseLease()
	if h.gcsStore != nil {
		if err := h.gcsStore.Close(); err != nil {
			h.log.Warn("closing the GCS store", "err", err)
		}
	}
}
