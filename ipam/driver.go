package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"

	api "github.com/docker/go-plugins-helpers/ipam"

	"github.com/ournet/ournet/store"
)

// Address space names reported to the engine.
const (
	LocalAddressSpace  = "ournet-local"
	GlobalAddressSpace = "ournet-global"
)

// stateVersion is the format of the state file; bump it on incompatible changes.
const stateVersion = 1

// Driver serves the IpamDriver API and saves the allocator's state after every
// change, so the engine and ournet agree even across plugin restarts.
type Driver struct {
	mu    sync.Mutex // orders change+save so the file never lags behind a reply
	alloc *Allocator
	file  store.File
	log   *slog.Logger
	// readOnly is set when ipam.json was written by a newer ournet: the file
	// is kept and every change is refused with this error. Set in NewDriver only.
	readOnly error
}

var _ api.Ipam = (*Driver)(nil)

// NewDriver loads stateFile (a missing file is a first start). A corrupt file
// is moved aside and the driver starts empty rather than crash-looping; a file
// from a newer ournet is kept and every change refused until the upgrade is
// redone; other read errors are returned so a readable-but-busy state is
// never overwritten.
// Nil defaultPools mean DockerDefaultPools; hostRoutes lists the host's routes.
func NewDriver(stateFile string, hostRoutes func() []netip.Prefix, defaultPools []DefaultPool, logger *slog.Logger) (*Driver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{alloc: NewAllocator(defaultPools, hostRoutes), file: store.File{Path: stateFile, Version: stateVersion}, log: logger}
	var s State
	found, err := d.file.Load(&s)
	if errors.Is(err, store.ErrNewerVersion) {
		logger.Error("ipam state is from a newer ournet: every change is refused", "error", err)
		d.readOnly = err
		return d, nil
	}
	if err == nil && found {
		if rerr := d.alloc.Restore(s); rerr != nil {
			err = fmt.Errorf("%w: %s: %v", store.ErrCorrupt, stateFile, rerr)
		}
	}
	if errors.Is(err, store.ErrCorrupt) {
		// Start empty either way: a plugin that exits here is restarted by
		// the engine into the same failure, and no network works at all.
		moved, qerr := d.file.Quarantine()
		logger.Error("ipam state was unreadable; started with no pools: networks using ournet IPAM must be recreated",
			"error", err, "moved_to", moved, "move_error", qerr)
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if found {
		logger.Info("ipam state loaded", "file", stateFile, "pools", len(s.Pools))
	}
	return d, nil
}

// change applies op and saves; if saving fails the change is undone in memory
// so that the error the engine sees matches what ournet remembers.
func (d *Driver) change(op func() (changed bool, err error)) error {
	if d.readOnly != nil {
		return d.readOnly
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.alloc.State()
	changed, err := op()
	if err != nil || !changed {
		return err
	}
	if err := d.file.Save(d.alloc.State()); err != nil {
		if rerr := d.alloc.Restore(before); rerr != nil { // cannot happen: before was valid
			d.log.Error("ipam could not undo a change after a failed save", "error", rerr)
		}
		return fmt.Errorf("ournet IPAM could not save its state, so nothing was changed: %w", err)
	}
	return nil
}

func (d *Driver) GetCapabilities() (*api.CapabilitiesResponse, error) {
	return &api.CapabilitiesResponse{RequiresMACAddress: false}, nil
}

func (d *Driver) GetDefaultAddressSpaces() (*api.AddressSpacesResponse, error) {
	return &api.AddressSpacesResponse{LocalDefaultAddressSpace: LocalAddressSpace, GlobalDefaultAddressSpace: GlobalAddressSpace}, nil
}

func (d *Driver) RequestPool(r *api.RequestPoolRequest) (*api.RequestPoolResponse, error) {
	// Docker's default IPAM ignores unknown --ipam-opt keys; so do we, visibly.
	keys := make([]string, 0, len(r.Options))
	for k := range r.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.log.Debug("ipam option ignored", "key", k, "value", r.Options[k])
	}
	var id string
	var prefix netip.Prefix
	err := d.change(func() (bool, error) {
		var err error
		id, prefix, err = d.alloc.RequestPool(r.AddressSpace, r.Pool, r.SubPool, r.Options, r.V6)
		return err == nil, err
	})
	if err != nil {
		d.log.Info("ipam pool refused", "subnet", r.Pool, "ip_range", r.SubPool, "v6", r.V6, "error", err)
		return nil, err
	}
	d.log.Info("ipam pool reserved", "pool", id, "subnet", prefix)
	return &api.RequestPoolResponse{PoolID: id, Pool: prefix.String()}, nil
}

func (d *Driver) ReleasePool(r *api.ReleasePoolRequest) error {
	err := d.change(func() (bool, error) {
		return d.alloc.releasePool(r.PoolID), nil
	})
	if err == nil {
		d.log.Info("ipam pool released", "pool", r.PoolID)
	}
	return err
}

func (d *Driver) RequestAddress(r *api.RequestAddressRequest) (*api.RequestAddressResponse, error) {
	var addr netip.Prefix
	err := d.change(func() (bool, error) {
		var err error
		addr, err = d.alloc.RequestAddress(r.PoolID, r.Address, r.Options)
		return err == nil, err
	})
	if err != nil {
		return nil, err
	}
	d.log.Debug("ipam address leased", "pool", r.PoolID, "address", addr, "preferred", r.Address)
	return &api.RequestAddressResponse{Address: addr.String()}, nil
}

func (d *Driver) ReleaseAddress(r *api.ReleaseAddressRequest) error {
	err := d.change(func() (bool, error) {
		return d.alloc.releaseAddress(r.PoolID, r.Address)
	})
	if err == nil {
		d.log.Debug("ipam address released", "pool", r.PoolID, "address", r.Address)
	}
	return err
}
