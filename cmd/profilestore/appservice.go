package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/spf13/cobra"
)

// AppserviceConfig configures profilestore beside a homeserver.
type AppserviceConfig struct {
	// Enabled serves /_matrix/app/v1 and mirrors the homeserver's events.
	Enabled bool `yaml:"enabled"`
	// Registration is profilestore's own registration file (written by
	// "profilestore appservice register"; default <data_dir>/appservice-registration.yaml).
	Registration string `yaml:"registration"`
	// HomeserverURL is where mirror mode asks for global profiles (default auth.homeserver_url).
	HomeserverURL string `yaml:"homeserver_url"`
	// ProfileCacheTTL bounds how long a homeserver profile answer is reused.
	ProfileCacheTTL     time.Duration `yaml:"profile_cache_ttl"`
	MaxTransactionBytes int64         `yaml:"max_transaction_bytes"`
	// Supplements are MSC4337 profile supplements from other appservices.
	Supplements SupplementsConfig `yaml:"supplements"`
	// ProfileLookup serves MSC4337 to the homeserver: profilestore as a
	// supplier of the profiles it stores.
	ProfileLookup ProfileLookupConfig `yaml:"profile_lookup"`
	// Registrations are other appservices' registration files (bridges)
	// whose as_tokens may write on the client API, as their sender or, with
	// ?user_id=, as a user in one of their exclusive users namespaces.
	// Supplements' registrations are not granted this implicitly: reading
	// for profilestore and writing to it are separate grants.
	Registrations []string `yaml:"registrations"`
	// ServerName is the homeserver's server name, which Registrations need
	// (the sender's user id; namespaces cover local users only).
	ServerName string `yaml:"server_name"`
	// Backfill imports the homeserver's past history (profilestore backfill).
	Backfill BackfillConfig `yaml:"backfill"`
}

// SupplementsConfig configures MSC4337 on profile reads.
type SupplementsConfig struct {
	Enabled bool `yaml:"enabled"`
	// Registrations are the appservices' registration files, asked in this order.
	Registrations []string `yaml:"registrations"`
	// Deadline bounds each appservice's answer (default 500 ms).
	Deadline time.Duration `yaml:"deadline"`
}

// ProfileLookupConfig configures the MSC4337 routes profilestore serves.
type ProfileLookupConfig struct {
	// Enabled serves them (default true, with appservice.enabled).
	Enabled *bool `yaml:"enabled"`
	// StandardFields supplies displayname and avatar_url too (default
	// false: mirror mode copies those from the homeserver, so supplying
	// them back could only replace a newer value with an older one).
	StandardFields bool `yaml:"standard_fields"`
}

func (c *AppserviceConfig) registrationPath(dataDir string) string {
	if c.Registration != "" {
		return c.Registration
	}
	return filepath.Join(dataDir, "appservice-registration.yaml")
}

// withAppservice adds the appservice side to the server configuration.
func (a *app) withAppservice(cfg *pshttp.Config) error {
	ac := a.cfg.Appservice
	if len(ac.Registrations) > 0 {
		auth, err := appserviceAuth(ac, cfg.Auth)
		if err != nil {
			return err
		}
		cfg.Auth = auth
	}
	if ac.Supplements.Enabled {
		regs, err := appservice.LoadRegistrations(ac.Supplements.Registrations)
		if err != nil {
			return err
		}
		sup := appservice.NewSupplier(appservice.SupplierOptions{Registrations: regs, Deadline: ac.Supplements.Deadline, Logger: a.log})
		cfg.Supplier = sup
		cfg.Collectors = append(cfg.Collectors, sup.Collectors()...)
	}
	if !ac.Enabled {
		return nil
	}
	reg, err := appservice.LoadRegistration(ac.registrationPath(a.cfg.DataDir))
	if err != nil {
		return fmt.Errorf("appservice: %w (create it with: profilestore appservice register)", err)
	}
	hsURL := ac.HomeserverURL
	if hsURL == "" {
		hsURL = a.cfg.Auth.HomeserverURL
	}
	var hs *appservice.HomeserverProfiles
	if hsURL != "" {
		hs = appservice.NewHomeserverProfiles(hsURL, reg.ASToken, nil, ac.ProfileCacheTTL)
	}
	mirror := appservice.NewMirror(appservice.MirrorOptions{Registration: reg, Profiles: a.Profiles, Rooms: a.Rooms, Homeserver: hs, Logger: a.log})
	ing := appservice.NewIngester(appservice.IngesterOptions{Registration: reg, Store: a.Store, Mirror: mirror,
		MaxTransactionBytes: ac.MaxTransactionBytes, Logger: a.log})
	cfg.Appservice = ing
	cfg.Collectors = append(cfg.Collectors, ing.Collectors()...)
	if pl := ac.ProfileLookup; pl.Enabled == nil || *pl.Enabled {
		cfg.ProfileLookup = &pshttp.ProfileLookup{StandardFields: pl.StandardFields}
	}
	return nil
}

// appserviceAuth puts the configured appservices' as_tokens in front of next.
func appserviceAuth(ac AppserviceConfig, next pshttp.Authenticator) (*pshttp.AppserviceAuth, error) {
	if ac.ServerName == "" {
		return nil, errors.New("config: appservice.registrations needs appservice.server_name")
	}
	regs, err := appservice.LoadRegistrations(ac.Registrations)
	if err != nil {
		return nil, err
	}
	services := make([]pshttp.AppserviceToken, len(regs))
	for i, r := range regs {
		services[i] = pshttp.AppserviceToken{ID: r.ID, Token: r.ASToken,
			Sender: domain.UserID("@" + r.SenderLocalpart + ":" + ac.ServerName), Exclusive: r.ExclusiveUser}
	}
	return pshttp.NewAppserviceAuth(ac.ServerName, services, next)
}

func appserviceCommand(load loader, f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "appservice", Short: "Run beside a homeserver as an application service"}
	var id, url, sender, serverName string
	var force, profileLookup bool
	register := &cobra.Command{
		Use:   "register",
		Short: "Write profilestore's registration (random as_token and hs_token) and print it for the homeserver",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			if url == "" {
				url = "http://" + cfg.Listen
			}
			path := cfg.Appservice.registrationPath(cfg.DataDir)
			if _, err := os.Stat(path); err == nil && !force {
				return fmt.Errorf("%s exists; --force replaces it (and its tokens)", path)
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			reg, err := appservice.NewRegistration(id, url, sender, serverName)
			if err != nil {
				return err
			}
			// MSC4337: both flags, so a homeserver implementing the stable
			// or the unstable version calls profilestore (which serves both
			// paths).
			reg.SupportsProfileLookup, reg.UnstableProfileLookup = profileLookup, profileLookup
			// Registering comes before the first serve, so like serve and
			// token issue it may create the data directory, and says so.
			if err := makeDataDir(filepath.Dir(path), func(m string) { fmt.Fprintln(cmd.ErrOrStderr(), m) }); err != nil {
				return err
			}
			if err := reg.WriteFile(path); err != nil {
				return err
			}
			out, err := reg.Marshal()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "stored in %s; give the homeserver this registration:\n", path)
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	register.Flags().StringVar(&id, "id", "profilestore", "appservice id, unique on the homeserver")
	register.Flags().StringVar(&url, "url", "", "URL the homeserver reaches profilestore at (default http://<listen>)")
	register.Flags().StringVar(&sender, "sender-localpart", "_profilestore", "localpart of the appservice's own user")
	register.Flags().StringVar(&serverName, "server-name", "", "the homeserver's server name (required)")
	register.Flags().BoolVar(&force, "force", false, "replace an existing registration")
	register.Flags().BoolVar(&profileLookup, "profile-lookup", true, "ask the homeserver to call profilestore for profiles (MSC4337: supports_profile_lookup)")
	_ = register.MarkFlagRequired("server-name")
	cmd.AddCommand(f.add(register, "data-dir", "listen"))
	return cmd
}
