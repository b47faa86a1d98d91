"""The status snapshot in Prometheus text format (0.0.4), for node_exporter's textfile collector.

Pure: ``render(snapshot)`` takes the dict that status.py builds and returns the text.
Names follow Prometheus conventions: a ``loghogd_`` prefix, base units (seconds, bytes),
``_total`` on counters, ``_timestamp_seconds`` on points in time.  Process figures are
``loghogd_``-prefixed rather than the usual ``process_*``: node_exporter exports its own
``process_*`` metrics and the textfile collector must not clash with them.
"""

# (name, type, help): the order they are written in.
METRICS = [
    ('loghogd_info', 'gauge', 'Always 1; the version is a label.'),
    ('loghogd_start_time_seconds', 'gauge', 'When the daemon started (Unix time).'),
    ('loghogd_uptime_seconds', 'gauge', 'Seconds since the daemon started.'),
    ('loghogd_messages_total', 'counter', 'Messages accepted and written, per app and facility.'),
    ('loghogd_message_bytes_total', 'counter',
     'Bytes of accepted message payloads (as received), per app and facility.'),
    ('loghogd_rejected_total', 'counter', 'Messages rejected, per reason.'),
    ('loghogd_refused_clients_total', 'counter',
     'Messages refused by allowed_clients, per certificate name (the 10 most refused).'),
    ('loghogd_connections_open', 'gauge', 'Stream connections open now, per transport.'),
    ('loghogd_connections_accepted_total', 'counter',
     'Stream connections accepted since start, per transport.'),
    ('loghogd_tls_handshake_failures_total', 'counter', 'TLS handshakes that failed or timed out.'),
    ('loghogd_udp_datagrams_total', 'counter', 'UDP datagrams read from the sockets.'),
    ('loghogd_udp_kernel_drops_total', 'counter',
     "UDP datagrams the kernel dropped on the daemon's sockets (receive buffer full)."),
    ('loghogd_write_errors_total', 'counter', 'Failed writes to log files (lines kept, retried).'),
    ('loghogd_hosts_over_max_hosts_total', 'counter',
     'Host names beyond a file_per_host facility\'s max_hosts (their lines in its shared file).'),
    ('loghogd_backup_delete_errors_total', 'counter', 'Old backups that could not be deleted.'),
    ('loghogd_dropped_lines_total', 'counter',
     'Lines dropped because a file could not be written for too long (max_backlog).'),
    ('loghogd_syslog_messages_total', 'counter',
     'Syslog messages received, per listener (udp, tcp, tls, unix); refusals are in '
     'loghogd_rejected_total (reasons syslog_*).'),
    ('loghogd_syslog_cut_total', 'counter', 'Syslog messages over max_message_size, cut.'),
    ('loghogd_syslog_replaced_utf8_total', 'counter',
     'Syslog messages whose bytes that were not UTF-8 were replaced.'),
    ('loghogd_file_size_bytes', 'gauge', 'Size of each open log file.'),
    ('loghogd_file_last_write_timestamp_seconds', 'gauge', 'Last write to each log file.'),
    ('loghogd_file_last_rotation_timestamp_seconds', 'gauge', 'Last rotation of each log file.'),
    ('loghogd_file_next_rotation_timestamp_seconds', 'gauge', 'Next scheduled rotation.'),
    ('loghogd_file_backups', 'gauge', 'Rotated files kept for each log file.'),
    ('loghogd_seal_epoch', 'gauge',
     'Epoch of the latest seal of each sealed file (anchor it off the machine with its chain).'),
    ('loghogd_seal_chain_prefix', 'gauge',
     'The first 48 bits of the chain hash of that seal, as a number (in hex: the first 12 '
     'digits of the CHAIN loghogd status shows; a number, not a label, so that each seal '
     'does not make a new series).'),
    ('loghogd_seal_timestamp_seconds', 'gauge', 'When each sealed file was last sealed.'),
    ('loghogd_seal_errors_total', 'counter',
     'Seals or sealing keys that could not be written (verify will show those epochs missing).'),
    ('loghogd_compressor_waiting', 'gauge', 'Rotated files waiting to be compressed.'),
    ('loghogd_compressed_files_total', 'counter', 'Rotated files compressed since start.'),
    ('loghogd_compression_failures_total', 'counter', 'Rotated files that failed to compress.'),
    ('loghogd_resident_memory_bytes', 'gauge', 'Resident memory of the daemon.'),
    ('loghogd_open_fds', 'gauge', 'Open file descriptors of the daemon.'),
    ('loghogd_max_fds', 'gauge', 'Limit on open file descriptors (soft RLIMIT_NOFILE).'),
    ('loghogd_cpu_seconds_total', 'counter', 'CPU time used by the daemon, user and system.'),
    ('loghogd_config_last_reload_successful', 'gauge',
     'Whether the last reload of facilities.conf succeeded (1 before any reload).'),
    ('loghogd_config_last_reload_success_timestamp_seconds', 'gauge',
     'When facilities.conf was last loaded successfully.'),
    ('loghogd_config_reloads_total', 'counter', 'Reloads (SIGHUP), per result.'),
]


def escape_label(value):
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    value = str(value)
    if '\\' in value or '"' in value or '\n' in value:
        value = value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    return value


def format_value(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def samples(snapshot):
    """{metric name: [(labels dict, value)]} from a snapshot; unknown values are left out."""
    out = {name: [] for name, _, _ in METRICS}
    daemon = snapshot['daemon']
    out['loghogd_info'].append(({'version': daemon['version']}, 1))
    out['loghogd_start_time_seconds'].append(({}, daemon['started_at']))
    out['loghogd_uptime_seconds'].append(({}, daemon['uptime_s']))
    for row in snapshot['accepted']:
        labels = {'app': row['app'], 'facility': row['facility']}
        out['loghogd_messages_total'].append((labels, row['messages']))
        out['loghogd_message_bytes_total'].append((labels, row['bytes']))
    for row in snapshot['rejected']:
        out['loghogd_rejected_total'].append(({'reason': row['reason']}, row['messages']))
    for row in snapshot.get('refused_clients', ()):
        out['loghogd_refused_clients_total'].append(({'client': row['client']}, row['messages']))
    connections = snapshot['connections']
    for kind, count in connections['open'].items():
        out['loghogd_connections_open'].append(({'transport': kind}, count))
    for kind, count in connections['accepted'].items():
        out['loghogd_connections_accepted_total'].append(({'transport': kind}, count))
    out['loghogd_tls_handshake_failures_total'].append(({}, connections['tls_handshake_failures']))
    udp = snapshot['udp']
    out['loghogd_udp_datagrams_total'].append(({}, udp['datagrams']))
    out['loghogd_udp_kernel_drops_total'].append(({}, udp['kernel_drops']))
    events = snapshot['events']
    out['loghogd_write_errors_total'].append(({}, events.get('write_errors', 0)))
    out['loghogd_dropped_lines_total'].append(({}, events.get('dropped_backlog', 0)))
    out['loghogd_hosts_over_max_hosts_total'].append(({}, events.get('hosts_over_max_hosts', 0)))
    out['loghogd_backup_delete_errors_total'].append(({}, events.get('prune_errors', 0)))
    for name, count in events.items():   # receiving syslog (issue 16)
        if name.startswith('syslog_messages_'):
            out['loghogd_syslog_messages_total'].append(
                ({'listener': name[len('syslog_messages_'):]}, count))
    if any(name.startswith('syslog_messages_') for name in events):
        out['loghogd_syslog_cut_total'].append(({}, events.get('syslog_cut', 0)))
        out['loghogd_syslog_replaced_utf8_total'].append(
            ({}, events.get('syslog_replaced_utf8', 0)))
    _file_samples(snapshot['files'], out)
    compressor = snapshot.get('tasks', {}).get('compressor') or {}
    out['loghogd_compressor_waiting'].append(({}, compressor.get('waiting')))
    out['loghogd_compressed_files_total'].append(({}, compressor.get('compressed')))
    out['loghogd_compression_failures_total'].append(({}, compressor.get('failed')))
    _seal_samples(snapshot, out)
    _process_samples(snapshot, out)
    return out


def _seal_samples(snapshot, out):
    sealing = snapshot.get('tasks', {}).get('sealing')
    if not sealing:
        return
    for entry in sealing.get('seals') or ():
        labels = {'path': entry['path']}
        out['loghogd_seal_epoch'].append((labels, entry['epoch']))
        out['loghogd_seal_chain_prefix'].append(
            (labels, int(entry['chain'][:12], 16) if entry['chain'] else None))
        out['loghogd_seal_timestamp_seconds'].append((labels, entry['time']))
    out['loghogd_seal_errors_total'].append(({}, snapshot['events'].get('seal_errors', 0)))


def _file_samples(files, out):
    for entry in files:
        labels = {'app': entry['app'], 'facility': entry['facility'], 'path': entry['path']}
        out['loghogd_file_size_bytes'].append((labels, entry['size']))
        out['loghogd_file_last_write_timestamp_seconds'].append((labels, entry['last_write']))
        out['loghogd_file_last_rotation_timestamp_seconds'].append((labels, entry.get('last_rotation')))
        out['loghogd_file_next_rotation_timestamp_seconds'].append((labels, entry.get('next_rotation')))
        backups = entry.get('backups')
        if isinstance(backups, list):
            backups = len(backups)
        out['loghogd_file_backups'].append((labels, backups))


def _process_samples(snapshot, out):
    process, config = snapshot['process'], snapshot['config']
    out['loghogd_resident_memory_bytes'].append(({}, process.get('rss_bytes')))
    out['loghogd_open_fds'].append(({}, process.get('open_fds')))
    out['loghogd_max_fds'].append(({}, process.get('max_fds')))
    out['loghogd_cpu_seconds_total'].append(({}, process.get('cpu_s')))
    last = config['last_reload']
    out['loghogd_config_last_reload_successful'].append(({}, True if last is None else last['ok']))
    out['loghogd_config_last_reload_success_timestamp_seconds'].append(({}, config['loaded_at']))
    out['loghogd_config_reloads_total'].append(({'result': 'success'}, config['reloads']))
    out['loghogd_config_reloads_total'].append(({'result': 'failure'}, config['reloads_failed']))


def render(snapshot):
    """The whole text file: for each metric that has samples, HELP, TYPE and the samples."""
    by_name = samples(snapshot)
    label_texts = {}   # the file metrics share their labels: format each set once
    lines = []
    for name, kind, help_text in METRICS:
        known = [(labels, value) for labels, value in by_name[name] if value is not None]
        if not known:
            continue
        lines.append('# HELP %s %s' % (name, help_text.replace('\\', '\\\\').replace('\n', '\\n')))
        lines.append('# TYPE %s %s' % (name, kind))
        for labels, value in known:
            if labels:
                key = tuple(labels.items())
                text = label_texts.get(key)
                if text is None:
                    text = label_texts[key] = ','.join('%s="%s"' % (label, escape_label(v))
                                                       for label, v in key)
                lines.append('%s{%s} %s' % (name, text, format_value(value)))
            else:
                lines.append('%s %s' % (name, format_value(value)))
    return '\n'.join(lines) + '\n'
