# Open peerfarm's ports in Windows Defender Firewall (see docs/operators.md, "Windows (native)").
# Run in an administrator PowerShell. Private profile only: a farm belongs on a trusted LAN.
# Without these rules Windows asks once, the first time peerfarm listens, whether Python may
# accept connections; a service cannot show that prompt, so the rules are needed for it.
$program = "$env:USERPROFILE\.local\bin\peerfarm.exe"
New-NetFirewallRule -DisplayName "peerfarm gossip (UDP)" -Direction Inbound -Protocol UDP -LocalPort 7946 -Profile Private -Action Allow
New-NetFirewallRule -DisplayName "peerfarm gossip and files (TCP)" -Direction Inbound -Protocol TCP -LocalPort 7946 -Profile Private -Action Allow
New-NetFirewallRule -DisplayName "peerfarm mDNS" -Direction Inbound -Protocol UDP -LocalPort 5353 -Profile Private -Action Allow
# Only when the dashboard is bound beyond loopback (--web 0.0.0.0:7947):
# New-NetFirewallRule -DisplayName "peerfarm dashboard" -Direction Inbound -Protocol TCP -LocalPort 7947 -Profile Private -Action Allow
Write-Host "peerfarm ports open for $program on private networks"
