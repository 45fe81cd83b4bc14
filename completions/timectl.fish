# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_timectl_global_optspecs
    string join \n h/help V/version
end

function __fish_timectl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_timectl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_timectl_using_subcommand
    set -l cmd (__fish_timectl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c timectl -n "__fish_timectl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c timectl -n "__fish_timectl_needs_command" -s V -l version -d 'Print version'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "validate" -d 'Check a desired-state file; never touches a host'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "schema" -d 'Print the JSON Schema of the desired-state file'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "plan" -d 'Show the steps that would converge the host (a dry run)'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "apply" -d 'Converge the host: run the plan, verify, roll back on failure'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "runs" -d 'List the runs recorded on a host: id, start time, result, steps'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "rollback" -d 'Undo a run (the last one unless RUN-ID is given), finished or interrupted, from its journal and backups'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "facts" -d 'Show what timectl detects about a host: distribution, paths, units'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "daemon" -d 'Run the embedded NTP engine (client and server); see docs/engine.md'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "status" -d 'Show the running engine\'s synchronisation state and sources, like `chronyc tracking` and `chronyc sources`'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish)'
complete -c timectl -n "__fish_timectl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c timectl -n "__fish_timectl_using_subcommand validate" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand schema" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l root -d 'Manage an offline root (image or chroot) instead of the running host' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l out -d 'Save the plan for `timectl apply PLANFILE` (refused there if the host changes in between)' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l markdown-out -d 'Also write the plan as markdown to FILE, whatever is printed: one look at the host gives both, e.g. `--json --markdown-out plan.md` for a bot that posts the markdown' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l metrics-textfile -d 'Write the run\'s metrics for node_exporter\'s textfile collector to PATH (replaced atomically; name it *.prom in the collector\'s directory): last run time, result, changes made, drift detected' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l json -d 'Print the plan as versioned JSON (docs/json-format.md)'
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l markdown -d 'Print the plan as markdown, for a pull-request comment'
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l detailed-exitcode -d 'Exit 2 when there are changes, 0 when there are none, 1 on error'
complete -c timectl -n "__fish_timectl_using_subcommand plan" -l no-color -d 'No colours, even on a terminal (also: NO_COLOR=1)'
complete -c timectl -n "__fish_timectl_using_subcommand plan" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand apply" -l root -d 'Manage an offline root (image or chroot) instead of the running host' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand apply" -l metrics-textfile -d 'Write the run\'s metrics for node_exporter\'s textfile collector to PATH (replaced atomically; name it *.prom in the collector\'s directory): last run time, result, changes made, drift detected' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand apply" -s y -l yes -d 'Do not ask for confirmation (needed when stdin is not a terminal)'
complete -c timectl -n "__fish_timectl_using_subcommand apply" -l json -d 'Print the report as JSON'
complete -c timectl -n "__fish_timectl_using_subcommand apply" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand runs" -l root -d 'Manage an offline root (image or chroot) instead of the running host' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand runs" -l json -d 'Print the journals as JSON'
complete -c timectl -n "__fish_timectl_using_subcommand runs" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand rollback" -l root -d 'Manage an offline root (image or chroot) instead of the running host' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand rollback" -s y -l yes -d 'Do not ask for confirmation (needed when stdin is not a terminal)'
complete -c timectl -n "__fish_timectl_using_subcommand rollback" -l json -d 'Print the report as JSON'
complete -c timectl -n "__fish_timectl_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand facts" -l root -d 'Manage an offline root (image or chroot) instead of the running host' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand facts" -l json -d 'Print as JSON'
complete -c timectl -n "__fish_timectl_using_subcommand facts" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l config -d 'Engine config file (YAML, see docs/engine-config.md)' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l source -d 'Poll this server (repeatable); added to the file\'s sources' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l listen -d 'Serve NTP on this address (repeatable); enables serving' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l control -d 'Control socket path [default: the file\'s, else /run/timectl/engine.sock]' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l drift-file -d 'Keep the frequency estimate in this file across restarts' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l minpoll -d 'Poll interval bounds for --source servers (log2 seconds)' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l maxpoll -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l local-stratum -d 'Serve this stratum while unsynchronised (with --listen)' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l rate-limit -d 'Rate-limit each client (with --listen): on average one request per INTERVAL seconds, bursts of 8; over it, a RATE kiss-o\'-death (serve.rateLimit in the config file)' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l metrics -d 'Serve Prometheus metrics on this address (`GET /metrics`, e.g. 127.0.0.1:9975); replaces the file\'s `metrics.listen`' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l nts-ca -d 'Trust these CA certificates (PEM) for NTS-KE servers instead of the system\'s store (the file\'s `ntsTrustedCerts`)' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l nts-cert -d 'Serve NTS with this certificate chain (PEM; needs --nts-key and NTP serving, e.g. --listen)' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l nts-key -d 'Private key (PEM) of --nts-cert' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l nts-listen -d 'Serve NTS-KE on this address (repeatable) [default: 0.0.0.0:4460 and [::]:4460]' -r
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l nts-key-dir -d 'Keep the NTS cookie keys in this directory across restarts' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l no-clock-control -d 'Compute everything, never touch the system clock (like chronyd -x)'
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l metrics-allow-remote -d 'Allow a --metrics address other than loopback (the endpoint has no authentication)'
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l nts -d 'Authenticate every --source server with NTS (RFC 8915); their PORT is then the NTS-KE port (default 4460)'
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -l check -d 'Check the configuration and exit'
complete -c timectl -n "__fish_timectl_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand status" -l control -d 'Control socket of the daemon' -r -F
complete -c timectl -n "__fish_timectl_using_subcommand status" -l json -d 'Print the versioned JSON document (docs/engine-control.md)'
complete -c timectl -n "__fish_timectl_using_subcommand status" -l step-now -d 'Ask the daemon to step the clock once by its current offset estimate'
complete -c timectl -n "__fish_timectl_using_subcommand status" -s h -l help -d 'Print help'
complete -c timectl -n "__fish_timectl_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "validate" -d 'Check a desired-state file; never touches a host'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "schema" -d 'Print the JSON Schema of the desired-state file'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "plan" -d 'Show the steps that would converge the host (a dry run)'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "apply" -d 'Converge the host: run the plan, verify, roll back on failure'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "runs" -d 'List the runs recorded on a host: id, start time, result, steps'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "rollback" -d 'Undo a run (the last one unless RUN-ID is given), finished or interrupted, from its journal and backups'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "facts" -d 'Show what timectl detects about a host: distribution, paths, units'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "daemon" -d 'Run the embedded NTP engine (client and server); see docs/engine.md'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "status" -d 'Show the running engine\'s synchronisation state and sources, like `chronyc tracking` and `chronyc sources`'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish)'
complete -c timectl -n "__fish_timectl_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan apply runs rollback facts daemon status completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
