package emulator

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/cosmount/cosmount/pkg/emulator/config"
)

//go:embed default-config.yaml
var defaultConfigYAML []byte

// Names and values of the default configuration, for tests and tools that
// rely on them.
const (
	DefaultServiceInstanceID = "00000000-0000-4000-8000-000000000001"
	DefaultBucket            = "test-bucket"
	DefaultLocation          = "us-south-standard"
	DefaultCluster           = "test-cluster"
	DefaultIssuer            = "test-cluster"
	DefaultWriterProfileID   = "Profile-writer"
	DefaultWriterProfileName = "cosmount-writer"
	DefaultReaderProfileID   = "Profile-reader"
	DefaultReaderProfileName = "cosmount-reader"
	DefaultAPIKeyID          = "ApiKey-test"
	DefaultAPIKey            = "test-api-key"
	DefaultHMACAccessKeyID   = "test-access-key"
	DefaultHMACSecretKey     = "test-secret-key"
)

// DataDirVar is replaced by the data directory in configuration files.
const DataDirVar = "${DATA_DIR}"

// DefaultConfigYAML returns the embedded default configuration file.
func DefaultConfigYAML() []byte { return append([]byte(nil), defaultConfigYAML...) }

// DefaultConfig returns the embedded default configuration for an emulator
// whose data lives in dataDir.
func DefaultConfig(dataDir string) (*config.Config, error) {
	return ParseConfig(defaultConfigYAML, dataDir)
}

// DefaultBuckets are the buckets the default configuration's users expect.
func DefaultBuckets() []BucketSpec {
	return []BucketSpec{{Name: DefaultBucket, LocationConstraint: DefaultLocation, ServiceInstance: DefaultServiceInstanceID}}
}

// LoadConfig reads a configuration file, replacing ${DATA_DIR} by dataDir.
func LoadConfig(path, dataDir string) (*config.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("emulator config: %w", err)
	}
	c, err := ParseConfig(b, dataDir)
	if err != nil {
		return nil, fmt.Errorf("emulator config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses and validates a configuration, replacing ${DATA_DIR} by
// dataDir (made absolute, so the files it names do not depend on the working
// directory).
func ParseConfig(b []byte, dataDir string) (*config.Config, error) {
	if strings.Contains(string(b), DataDirVar) {
		if dataDir == "" {
			return nil, fmt.Errorf("the configuration refers to %s but no data directory is set", DataDirVar)
		}
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, err
		}
		b = []byte(strings.ReplaceAll(string(b), DataDirVar, abs))
	}
	var c config.Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}
