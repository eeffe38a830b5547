package main

import (
	"fmt"
	"net/http"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue/backup"
)

// Admin API of the data lifecycle: deletion on request, tenant export and
// backups.

// adminDeleteReceipt removes one receipt's payload and attachments; the
// signed receipt without payload stays and verifies.
func (g *gateway) adminDeleteReceipt(w http.ResponseWriter, r *http.Request) {
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	d, err := g.fwd.DeleteReceipt(forwarder.WithActor(r.Context(), "admin"), tenant, id)
	if err != nil {
		g.adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// adminDeleteTenant deletes a tenant's data for good (crypto-shredding).
// The tenant's name must be repeated in ?confirm=.
func (g *gateway) adminDeleteTenant(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if !ingress.ValidName(tenant) {
		g.adminFail(w, http.StatusBadRequest, fmt.Errorf("%q is not a tenant name", tenant))
		return
	}
	if r.URL.Query().Get("confirm") != tenant {
		g.adminFail(w, http.StatusBadRequest, fmt.Errorf("deleting a tenant cannot be undone: repeat its name in ?confirm="))
		return
	}
	if err := g.deleteTenant(r.Context(), "admin", tenant); err != nil {
		g.adminFail(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant": tenant, "status": "deleted",
		"note": "the tenant's key is destroyed: its data is unreadable here and in every backup; remove the tenant from the configuration to stop new data"})
}

// adminExportTenant streams everything a tenant owns as a tar archive.
// An error after the first byte cuts the archive short, which the
// verifier reports (no manifest).
func (g *gateway) adminExportTenant(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if !ingress.ValidName(tenant) {
		g.adminFail(w, http.StatusBadRequest, fmt.Errorf("%q is not a tenant name", tenant))
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="`+tenant+`-export.tar"`)
	w.Header().Set("Cache-Control", "no-store")
	err := g.exportTenant(r.Context(), tenant, w)
	g.appendAudit(r.Context(), audit.Entry{Actor: "admin", Action: actionTenantExport, Tenant: tenant, Target: tenant,
		Outcome: outcomeOf(err), RequestID: r.Header.Get("X-Request-Id")})
	if err != nil {
		g.log.Error("tenant export failed", "tenant", tenant, "err", err)
		panic(http.ErrAbortHandler) // the client sees a cut connection, not a short archive that looks whole
	}
}

// adminBackup writes a backup now.
func (g *gateway) adminBackup(w http.ResponseWriter, r *http.Request) {
	res, err := g.life.backup(r.Context())
	if err != nil {
		g.adminFail(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": res.ID, "streams": res.Streams, "parts": res.Parts, "bytes": res.Bytes})
}

// adminListBackups lists the complete snapshots of the primary location.
func (g *gateway) adminListBackups(w http.ResponseWriter, r *http.Request) {
	if len(g.life.targets) == 0 {
		g.adminFail(w, http.StatusNotFound, fmt.Errorf("no backup location: set backup.s3.bucket"))
		return
	}
	ids, err := backup.List(r.Context(), g.life.targets[0])
	if err != nil {
		g.adminFail(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": ids})
}
