"""A status snapshot as a busy daemon would publish it, for the rendering tests."""

import copy

NOW = 1_700_003_725.0     # 2023-11-14, 1 h 2 min 5 s after STARTED
STARTED = 1_700_000_000.0

_SAMPLE = {
    'format': 1,
    'written_at': NOW - 2,
    'interval_s': 5.0,
    'window_s': 62.5,
    'daemon': {'pid': 4242, 'version': '0.8.0', 'started_at': STARTED,
               'uptime_s': NOW - 2 - STARTED},
    'config': {'file': '/etc/loghogd/loghogd.conf',
               'facilities_file': '/etc/loghogd/facilities.conf', 'facilities': 3,
               'loaded_at': STARTED + 600, 'last_reload': {'at': STARTED + 600, 'ok': True},
               'reloads': 1, 'reloads_failed': 0},
    'process': {'pid': 4242, 'rss_bytes': 31 * 1024 * 1024, 'open_fds': 27, 'max_fds': 1024,
                'cpu_s': 12.5},
    'totals': {'accepted': 1_250_000, 'accepted_bytes': 250 * 1024 * 1024, 'rejected': 7,
               'accepted_last_minute': 12_500, 'accepted_bytes_last_minute': 2_500_000,
               'rejected_last_minute': 1, 'accepted_per_s': 200.0, 'rejected_per_s': 0.016},
    'accepted': [
        {'app': 'shop', 'facility': 'root', 'messages': 1_000_000, 'bytes': 200 * 1024 * 1024,
         'messages_last_minute': 12_000, 'bytes_last_minute': 2_400_000},
        {'app': 'shop', 'facility': 'payments', 'messages': 250_000, 'bytes': 50 * 1024 * 1024,
         'messages_last_minute': 500, 'bytes_last_minute': 100_000},
    ],
    'rejected': [{'reason': 'bad_signature', 'messages': 5, 'messages_last_minute': 1},
                 {'reason': 'unknown_app', 'messages': 2, 'messages_last_minute': 0}],
    'rejected_by_peer': [{'peer': '10.0.0.9', 'messages': 5}, {'peer': '10.0.0.4', 'messages': 2}],
    'connections': {'open': {'tcp': 12, 'tls': 3}, 'accepted': {'tcp': 40, 'tls': 9},
                    'accepted_last_minute': {'tcp': 1, 'tls': 0}, 'tls_handshake_failures': 2,
                    'accepting': True},
    'udp': {'datagrams': 5000, 'datagrams_last_minute': 100, 'kernel_drops': 37,
            'sockets': [{'address': '0.0.0.0:5566', 'queue_bytes': 0, 'drops': 37},
                        {'address': '[::]:5566', 'queue_bytes': 2048, 'drops': 0}]},
    'files': [
        {'path': '/var/log/loghogd/shop/payments.log', 'app': 'shop', 'facility': 'payments',
         'size': 3 * 1024 * 1024, 'last_write': NOW - 4, 'rotate': 'daily', 'backup_count': 30,
         'failing': False},
        {'path': '/var/log/loghogd/shop/root.log', 'app': 'shop', 'facility': 'root',
         'size': 120 * 1024 * 1024, 'last_write': NOW - 1, 'rotate': 'hourly',
         'backup_count': 48, 'failing': False},
    ],
    'rotation_tracked': False,
    'tasks': {},
    'events': {'reloads': 1, 'tls_handshakes_failed': 2, 'udp_datagrams': 5000},
}


def sample():
    """A fresh deep copy, so that a test may change it."""
    return copy.deepcopy(_SAMPLE)
