// Package mounterapi is the versioned gRPC API between the CSI node plugin
// and the node's mounter, the long-lived process that owns every cosmount
// server on a node: the messages, the service description, a client and the
// server registration. Messages are JSON (a gRPC codec of this package), so
// the contract is readable Go here and in pkg/volume, with no generated code.
//
// Version 1 (service cosmount.mounter.v1.Mounter):
//   - Publish mounts a volume at a target, or, when the target already serves
//     the same volume, replaces only its credentials; a different volume on
//     the target is AlreadyExists, a dead server FailedPrecondition.
//   - Unpublish stops the server once nothing it accepted is still being
//     uploaded (Unavailable until then), and unmounts.
//   - Status and List report what is mounted, as the mounter sees it.
//   - Version names the API and the mounter's build.
//
// Errors are gRPC statuses whose codes the node plugin can pass on to kubelet
// as they are. Credentials travel in PublishRequest only; they are never
// logged by either side and never part of a status.
package mounterapi

import (
	"time"

	"github.com/cosmount/cosmount/pkg/volume"
)

// APIVersion is the version of this API; a mounter answers it in Version.
const APIVersion = "v1"

// ServiceName is the gRPC service name.
const ServiceName = "cosmount.mounter.v1.Mounter"

// Actions a Publish reports.
const (
	ActionMounted            = "mounted"
	ActionCredentialsUpdated = "credentials-updated"
	ActionUnchanged          = "unchanged"
	ActionUnmounted          = "unmounted"
	ActionNotPublished       = "not-published"
)

// PublishRequest asks for spec to be served with credentials.
type PublishRequest struct {
	Spec        volume.Spec        `json:"spec"`
	Credentials volume.Credentials `json:"credentials"`
}

// PublishResponse says what Publish did and what is there now.
type PublishResponse struct {
	Action string       `json:"action"`
	Volume VolumeStatus `json:"volume"`
}

// UnpublishRequest asks for the volume at Target to be stopped and unmounted.
// VolumeID, when set, must match the published volume.
type UnpublishRequest struct {
	Target   string `json:"target"`
	VolumeID string `json:"volumeID,omitempty"`
}

// UnpublishResponse says what Unpublish did.
type UnpublishResponse struct {
	Action string `json:"action"`
}

// StatusRequest asks for the state of the volume at Target.
type StatusRequest struct {
	Target string `json:"target"`
	// Pending also asks the volume's server what it has not uploaded yet
	// (VolumeStatus.Pending): a round trip to its control socket.
	Pending bool `json:"pending,omitempty"`
}

// ListRequest asks for every volume the mounter serves.
type ListRequest struct {
	// VolumeID, if set, lists only the publications of that volume.
	VolumeID string `json:"volumeID,omitempty"`
}

// ListResponse lists them, in no particular order.
type ListResponse struct {
	Volumes []VolumeStatus `json:"volumes"`
}

// VersionRequest asks for the mounter's version.
type VersionRequest struct{}

// VersionResponse names the API and the build of the mounter.
type VersionResponse struct {
	API     string `json:"api"`
	Version string `json:"version"`
}

// State is the condition of a published volume.
type State string

const (
	// StateHealthy: the server runs and its mount answers.
	StateHealthy State = "healthy"
	// StateUnresponsive: the server runs but its mount did not answer in
	// time; it may be busy or stuck.
	StateUnresponsive State = "unresponsive"
	// StateDead: the server is gone (crashed, killed, OOM); the mount answers
	// "transport endpoint is not connected" until the volume is unpublished.
	StateDead State = "dead"
	// StateStopping: an unpublish has begun.
	StateStopping State = "stopping"
)

// VolumeStatus is the mounter's view of one published volume. It carries no
// secret: CredentialsDigest is a hash that tells whether a republish brings
// new credentials.
type VolumeStatus struct {
	Target   string      `json:"target"`
	VolumeID string      `json:"volumeID"`
	Spec     volume.Spec `json:"spec"`
	State    State       `json:"state"`
	// Reason is a short CamelCase cause for a state other than healthy
	// (ServerKilled, ServerOOMKilled, ServerExited, MounterRestarted,
	// ServerUnresponsive); Message says it for people.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`

	PID     int        `json:"pid"`
	Started time.Time  `json:"started"`
	Died    *time.Time `json:"died,omitempty"`

	CredentialsDigest string `json:"credentialsDigest"`
	// Pending is what the server has not uploaded yet (nil when it did not
	// answer).
	Pending *volume.Pending `json:"pending,omitempty"`
	// Usage is the mount's statfs (nil when it did not answer).
	Usage *Usage `json:"usage,omitempty"`
	// MemoryLimit is the server's memory budget in bytes (0: none).
	MemoryLimit int64 `json:"memoryLimit,omitempty"`
}

// Usage is what statfs of the mount reported.
type Usage struct {
	BytesTotal, BytesAvailable, BytesUsed    int64
	InodesTotal, InodesAvailable, InodesUsed int64
}
