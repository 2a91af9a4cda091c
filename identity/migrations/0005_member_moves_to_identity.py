"""The member row (status, merged_into, first and last event) becomes identity's model.

State only: the table keeps its name (``members_member``), its rows, its constraint and
every foreign key pointing at it; identity's own tables now point at identity's model. The
members app's ``Member`` becomes a proxy of it in ``members.0017``.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('identity', '0004_identifier_alias_class'),
        ('members', '0018_orders_by_source_and_their_owners'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Member',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('status', models.CharField(choices=[('active', 'Active'), ('merged', 'Merged')], default='active', max_length=16)),
                        ('first_event_at', models.DateTimeField()),
                        ('first_event_message_id', models.CharField(max_length=255)),
                        ('first_event_source_id', models.BigIntegerField()),
                        ('last_event_at', models.DateTimeField()),
                        ('last_event_message_id', models.CharField(max_length=255)),
                        ('last_event_source_id', models.BigIntegerField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('merged_into', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='identity.member')),
                    ],
                    options={
                        'db_table': 'members_member',
                        'default_permissions': (),
                        'constraints': [
                            models.CheckConstraint(condition=models.Q(models.Q(('merged_into__isnull', True), ('status', 'active')), models.Q(('merged_into__isnull', False), ('status', 'merged')), _connector='OR'), name='member_merged_iff_survivor'),
                        ],
                    },
                ),
                migrations.AlterField(
                    model_name='eventresolution',
                    name='member',
                    field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='identity.member'),
                ),
                migrations.AlterField(
                    model_name='identifier',
                    name='member',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='identity.member'),
                ),
                migrations.AlterField(
                    model_name='memberidentifier',
                    name='member',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='identity.member'),
                ),
                migrations.AlterField(
                    model_name='mergerecord',
                    name='absorbed',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='identity.member'),
                ),
                migrations.AlterField(
                    model_name='mergerecord',
                    name='survivor',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='identity.member'),
                ),
                migrations.AlterField(
                    model_name='splitrecord',
                    name='member',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='identity.member'),
                ),
            ],
        ),
    ]
