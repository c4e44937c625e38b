// Package volume owns the contract between the CSI node plugin, the mounter
// and a cosmount server: the mount-option grammar (one parser, used by the
// plugin to validate and by the server to apply, with the scope that says who
// may set each option), byte sizes, the authentication methods and the format
// of their credential files, and Spec, the description of one published
// volume that travels from plugin to mounter and becomes the server's command
// line. It imports nothing of FUSE, CSI or Kubernetes.
package volume
