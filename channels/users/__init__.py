"""Who a sender is: the organisation's directories (file, HTTP, LDAP) that map a platform identity
to one person, platform-neutral and shared by every channel."""
