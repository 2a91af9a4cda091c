"""Members' ``Member`` becomes a proxy of identity's (``identity.0005``), which owns the row.

State only: the table ``members_member`` and every row stay. The proxy keeps the content
type ``members.member`` and its permission rows (``view_member``, ``view_contact_details``,
``split_member``, ...), so every role and every staff member keeps exactly the access they had;
members' tables still point at ``members.member``, that is at the same table.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('identity', '0005_member_moves_to_identity'),
        ('members', '0018_orders_by_source_and_their_owners'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(
                    name='Member',
                ),
                migrations.CreateModel(
                    name='Member',
                    fields=[],
                    options={
                        'permissions': [('view_contact_details', 'Can see phone numbers and emails unmasked'), ('split_member', 'Can split a wrong merge')],
                        'proxy': True,
                        'indexes': [],
                        'constraints': [],
                    },
                    bases=('identity.member',),
                ),
            ],
        ),
    ]
